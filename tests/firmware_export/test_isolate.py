"""run_isolated: results come back, project errors keep their class, crashes become ExportError."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

from firmware_export.isolate import run_isolated
from tinyprune.errors import ConfigError, ExportError, UnsupportedOpError

# Child-side functions: top level in this importable test module.


def _double(x: np.ndarray, *, offset: int = 0) -> np.ndarray:
    return x * 2 + offset


def _abort_after_message() -> None:
    os.write(2, b"Node PAD (number 3) failed to prepare with status 1\n")
    os.abort()


def _raise_config() -> None:
    msg = "bad --calib file 'x.npy': expected float32, got int64"
    raise ConfigError(msg)


def _raise_unsupported() -> None:
    msg = "CONV_3D lacking"
    raise UnsupportedOpError(msg, ops=("CONV_3D",), target="cortex-m4")


def _raise_runtime() -> None:
    msg = "TFLM failed to allocate tensors"
    raise RuntimeError(msg)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _exit_code(code: int) -> None:
    sys.stderr.flush()
    os._exit(code)


def _modules_loaded() -> list[str]:
    return sorted(m for m in ("tensorflow", "onnx", "firmware_export.pipeline") if m in sys.modules)


def test_returns_result_of_child() -> None:
    x = np.arange(6, dtype=np.int32).reshape(2, 3)
    out = run_isolated(_double, x, offset=1)
    np.testing.assert_array_equal(out, x * 2 + 1)


def test_child_runs_in_another_process_without_heavy_imports() -> None:
    assert run_isolated(os.getpid) != os.getpid()
    assert run_isolated(_modules_loaded) == []


def test_abort_becomes_export_error_naming_sigabrt_and_stderr() -> None:
    with pytest.raises(ExportError, match="SIGABRT") as info:
        run_isolated(_abort_after_message, stage="tflm")
    assert info.value.stage == "tflm"
    assert "Node PAD (number 3) failed to prepare" in str(info.value)
    assert type(info.value) is ExportError


def test_config_error_is_reraised_unchanged() -> None:
    with pytest.raises(ConfigError) as info:
        run_isolated(_raise_config)
    assert type(info.value) is ConfigError
    assert str(info.value) == "bad --calib file 'x.npy': expected float32, got int64"
    assert info.value.exit_code == 2


def test_subclass_keeps_its_attributes() -> None:
    with pytest.raises(UnsupportedOpError) as info:
        run_isolated(_raise_unsupported)
    assert info.value.ops == ("CONV_3D",)
    assert info.value.target == "cortex-m4"
    assert info.value.exit_code == 4


def test_other_exception_becomes_export_error_with_its_text() -> None:
    with pytest.raises(ExportError, match="RuntimeError: TFLM failed to allocate") as info:
        run_isolated(_raise_runtime, stage="tflm-arena")
    assert info.value.stage == "tflm-arena"


def test_nonzero_exit_is_reported() -> None:
    with pytest.raises(ExportError, match="exited with code 3"):
        run_isolated(_exit_code, 3)


def test_timeout_kills_child() -> None:
    start = time.monotonic()
    with pytest.raises(ExportError, match="did not finish within 0.5 s"):
        run_isolated(_sleep, 30, timeout=0.5)
    assert time.monotonic() - start < 10


def test_local_function_is_refused() -> None:
    def local() -> int:
        return 1

    with pytest.raises(ExportError, match="top-level function"):
        run_isolated(local)
