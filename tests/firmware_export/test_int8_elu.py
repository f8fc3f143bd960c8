"""The converter's float ELU islands become TFLite's int8 ELU, computing the same outputs."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_export.int8_elu import quantize_elu_islands
from firmware_export.tflite_model import parse_tflite

pytestmark = pytest.mark.tf


def _float_ops(model_bytes: bytes) -> list[str]:
    m = parse_tflite(model_bytes)
    return [op.name for op in m.ops if any(m.tensors[t].dtype == "FLOAT32" for t in op.outputs)]


def _inputs(model_bytes: bytes, n: int = 4) -> np.ndarray:
    shape = parse_tflite(model_bytes).tensors[parse_tflite(model_bytes).inputs[0]].shape
    return np.random.default_rng(0).integers(-128, 128, size=(n, *shape[1:])).astype(np.int8)


def test_elu_islands_run_in_int8_with_the_same_outputs(wide_elu_model: bytes) -> None:
    from firmware_export.tflm import run_tflm
    from firmware_export.verify import run_litert

    assert "ELU" in _float_ops(wide_elu_model)  # the converter left ELU in float
    fused = quantize_elu_islands(wide_elu_model)
    assert _float_ops(fused) == []
    ops = [op.name for op in parse_tflite(fused).ops]
    assert ops.count("ELU") == 3 and "DEQUANTIZE" not in ops and "QUANTIZE" not in ops
    x = _inputs(wide_elu_model)
    # the int8 ELU's table is quantize(elu(dequantize(q))): what the float island computes
    np.testing.assert_array_equal(
        run_litert(fused, x, "builtin"), run_litert(wide_elu_model, x, "builtin")
    )
    tflm = run_tflm(fused, x, arena_bytes=4 << 20)
    assert np.abs(tflm.astype(int) - run_litert(fused, x, "builtin").astype(int)).max() <= 2


def test_a_model_without_elu_islands_is_unchanged(int8_model: bytes) -> None:
    assert quantize_elu_islands(int8_model) == int8_model
