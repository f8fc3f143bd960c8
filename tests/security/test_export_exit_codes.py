"""Issue 13: export failures get their documented exit code and one clean message line."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import numpy as np
import pytest

from tinyprune.cli import main

MODELS = Path(__file__).with_name("models_bad.py")


def _calib(tmp_path: Path, shape: tuple[int, ...], n: int = 20, dtype: str = "float32") -> Path:
    path = tmp_path / "calib.npy"
    np.save(path, np.random.default_rng(0).standard_normal((n, *shape)).astype(dtype))
    return path


def _export(model: str, calib: Path, out: Path, *extra: str) -> int:
    return main(["export", model, "--calib", str(calib), "--out", str(out), *extra])


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("tinyprune: error:"), lines[-3:]
    return lines[-1]


def test_op_torch_onnx_cannot_export_is_exit_4_naming_layer_and_op(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert _export(f"{MODELS}:fft", _calib(tmp_path, (1, 16)), out) == 4
    err = _error(capsys)
    assert "layer 'spec'" in err and "aten::fft_rfft" in err
    assert not out.exists()


@pytest.mark.tf
def test_lstm_onnx2tf_cannot_convert_is_exit_4_one_clean_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert _export(f"{MODELS}:lstm", _calib(tmp_path, (8, 4)), out) == 4
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("tinyprune: error: layer 'lstm'") and "LSTM" in err
    assert "\x1b" not in err and ".staging-" not in err
    assert not out.exists()


@pytest.mark.tf
def test_disk_full_during_conversion_is_exit_2_not_blamed_on_onnx2tf(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx2tf

    def full(**kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", kwargs["output_folder_path"])

    monkeypatch.setattr(onnx2tf, "convert", full)
    example = Path(__file__).resolve().parents[2] / "examples" / "tiny_cnn.py"
    out = tmp_path / "run"
    assert _export(f"{example}:build", _calib(tmp_path, (1, 16, 16)), out) == 2
    err = _error(capsys)
    assert "No space left on device" in err and "onnx2tf" not in err
    assert not out.exists()


def test_nan_weights_exit_2_naming_the_tensor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _export(f"{MODELS}:nan_weights", _calib(tmp_path, (1, 16)), tmp_path / "run") == 2
    err = _error(capsys)
    assert "'fc.weight'" in err and "NaN" in err and "(1, 3)" in err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_float_tolerance_is_refused(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calib = _calib(tmp_path, (1, 16))
    out = tmp_path / "run"
    assert _export(f"{MODELS}:fft", calib, out, f"--float-tolerance={value}") == 2
    assert "finite" in _error(capsys) and not out.exists()


def test_int_and_tiny_calibration_sets_warn(caplog: pytest.LogCaptureFixture) -> None:
    from firmware_export.calibration import check_calibration

    with caplog.at_level("WARNING"):
        data = check_calibration(np.arange(2 * 16).reshape(2, 1, 16).astype(np.uint8))
    assert data.dtype == np.float32
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "uint8" in text and "not float" in text
    assert re.search(r"only 2 calibration sample", text)
    caplog.clear()
    with caplog.at_level("WARNING"):
        check_calibration(np.zeros((32, 1, 16), np.float32))
    assert not caplog.records


def test_avi_with_zero_fps_is_a_config_error(tmp_path: Path) -> None:
    from tinyprune.data.avi import read_avi, write_avi
    from tinyprune.errors import ConfigError

    path = write_avi(tmp_path / "v.avi", np.zeros((2, 4, 4, 3), np.uint8), fps=30)
    raw = bytearray(path.read_bytes())
    avih = raw.index(b"avih") + 8
    raw[avih : avih + 4] = b"\0\0\0\0"  # dwMicroSecPerFrame
    strh = raw.index(b"strh") + 8
    raw[strh + 20 : strh + 28] = b"\0" * 8  # dwScale, dwRate
    path.write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match="no frame rate"):
        read_avi(path)
