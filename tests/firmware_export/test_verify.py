"""Comparison figures, quantization helpers, and TFLM-vs-LiteRT parity with planted divergences."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from firmware_export import parity, verify
from tinyprune.errors import ConfigError, ExportError, MissingKernelError, VerificationError

# --- figures on synthetic arrays (no runtime needed) -----------------------------------------


def test_compare_float_figures_by_hand() -> None:
    ref = np.array([[1.0, 2.0], [3.0, 4.0]])
    cand = ref + np.array([[0.0, 0.5], [0.0, 0.0]])
    c = verify.compare_float(ref, cand, "torch_vs_onnx", tol_max_abs=0.5)
    assert c.max_abs == pytest.approx(0.5)
    assert c.mae == pytest.approx(0.125)
    assert c.rmse == pytest.approx(0.25)
    assert c.l2r == pytest.approx(0.5 / math.sqrt(30))
    assert c.cos == pytest.approx(
        float(ref.ravel() @ cand.ravel()) / (np.linalg.norm(ref) * np.linalg.norm(cand))
    )
    assert c.passed and c.samples == 2 and c.top1_agreement == 1.0
    assert not verify.compare_float(ref, cand, "x", tol_max_abs=0.49).passed


def test_compare_float_rejects_shape_mismatch() -> None:
    with pytest.raises(ConfigError, match=r"shape \(2, 2\), candidate \(2, 3\)"):
        verify.compare_float(np.zeros((2, 2)), np.zeros((2, 3)), "x", 0.1)


def test_to_dict_is_json_ready_even_with_infinite_l2r() -> None:
    c = verify.compare_float(np.zeros((2, 3)), np.ones((2, 3)), "zero_ref", tol_max_abs=0.0)
    d = c.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False))["l2r"] is None
    assert d["tolerance"] == {"max_abs_max": 0.0} and d["passed"] is False


def test_compare_quantized_top1_and_accuracy() -> None:
    ref = np.array([[0.9, 0.1, 0.0], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.6, 0.4, 0.0]])
    cand = ref.copy()
    cand[3] = [0.4, 0.6, 0.0]  # one flipped decision
    labels = np.array([0, 1, 2, 1])
    c = verify.compare_quantized(
        ref, cand, "float_vs_int8", verify.QuantLimits(min_cos=0.9, min_top1=0.7), labels=labels
    )
    assert c.top1_agreement == pytest.approx(0.75)
    assert c.accuracy_reference == pytest.approx(0.75)
    assert c.accuracy_candidate == pytest.approx(1.0)
    assert c.passed
    assert not verify.compare_quantized(
        ref, cand, "x", verify.QuantLimits(min_cos=0.9, min_top1=0.8)
    ).passed


def test_compare_quantized_fails_on_wrong_direction() -> None:
    ref = np.random.default_rng(0).standard_normal((8, 5))
    assert verify.compare_quantized(ref, ref + 1e-3, "x").passed
    bad = verify.compare_quantized(ref, -ref, "x")
    assert bad.cos == pytest.approx(-1.0) and not bad.passed
    assert bad.tolerance == {"cos_min": 0.99}


def test_compare_quantized_without_classes_has_no_top1() -> None:
    ref = np.linspace(0, 1, 10).reshape(10, 1)
    c = verify.compare_quantized(ref, ref, "hr", verify.QuantLimits(max_abs=0.0))
    assert c.top1_agreement is None and c.passed and c.cos == 1.0


def test_quantize_dequantize_round_trip_and_clipping() -> None:
    x = np.linspace(-1, 1, 101, dtype=np.float32)
    q = verify.quantize_input(x, scale=1 / 127, zero_point=0)
    assert q.dtype == np.int8 and q.min() == -127 and q.max() == 127
    assert np.max(np.abs(verify.dequantize(q, 1 / 127, 0) - x)) <= 0.5 / 127 + 1e-7
    clipped = verify.quantize_input(np.array([100.0, -100.0]), scale=0.1, zero_point=-5)
    np.testing.assert_array_equal(clipped, [127, -128])
    with pytest.raises(ConfigError, match="scale must be > 0"):
        verify.quantize_input(x, 0.0, 0)


# --- runtimes on a TensorFlow-built int8 model ------------------------------------------------


def _inputs(n: int = 8) -> np.ndarray:
    return np.random.default_rng(2).integers(-128, 128, (n, 12, 12, 2)).astype(np.int8)


def _weighted_op(model: bytes, layer: str) -> int:
    """Index of the op of layer conv1 / conv2 / fc (by op kind and order: Keras tensor names
    depend on how many models the process built before)."""
    from firmware_export.tflite_model import parse_tflite

    kind, nth = {"conv1": ("CONV_2D", 0), "conv2": ("CONV_2D", 1), "fc": ("FULLY_CONNECTED", 0)}[
        layer
    ]
    return [op.index for op in parse_tflite(model).ops if op.name == kind][nth]


def _negate_weights(model: bytes, layer: str) -> bytes:
    """Copy of the model with the weight tensor of one layer negated in place (same graph)."""
    from firmware_export.tflite_model import parse_tflite

    parsed = parse_tflite(model)
    t = parsed.tensors[parsed.ops[_weighted_op(model, layer)].inputs[1]]
    raw = parsed.constant(t.index).tobytes()
    at = model.find(raw)
    assert at >= 0 and model.find(raw, at + 1) < 0, "weights must occur once in the flatbuffer"
    flipped = np.clip(-parsed.constant(t.index).astype(np.int16), -127, 127).astype(np.int8)
    return model[:at] + flipped.tobytes() + model[at + len(raw) :]


_CONV1_W, _CONV2_W, _FC_W = "conv1", "conv2", "fc"


@pytest.mark.tf
def test_parity_holds_bit_exactly(int8_model: bytes) -> None:
    c = parity.check_runtime_parity(int8_model, _inputs())
    assert c.passed and c.max_abs == 0.0 and c.units == "LSB" and c.samples == 8
    assert c.first_divergent_op is None


@pytest.mark.tf
def test_parity_failure_names_first_divergent_op(int8_model: bytes) -> None:
    tampered = _negate_weights(int8_model, _CONV1_W)
    with pytest.raises(VerificationError, match="--tflm-tolerance") as info:
        parity.check_runtime_parity(int8_model, _inputs(), candidate_model=tampered)
    assert info.value.exit_code == 5
    assert "first divergent op on sample" in str(info.value)
    first = f"op {_weighted_op(int8_model, _CONV1_W)} CONV_2D"
    assert first in str(info.value)
    failed = info.value.comparison
    assert not failed.passed and failed.max_abs > 0
    assert failed.first_divergent_op.startswith(first)


@pytest.mark.tf
def test_parity_tolerance_is_respected(int8_model: bytes) -> None:
    tampered = _negate_weights(int8_model, _FC_W)
    c = parity.check_runtime_parity(int8_model, _inputs(), 255, candidate_model=tampered)
    assert c.passed and c.max_abs > 0 and c.tolerance == {"max_abs_max": 255.0}


@pytest.mark.tf
@pytest.mark.parametrize(
    ("weights", "expected"),
    [(_CONV1_W, "CONV_2D"), (_CONV2_W, "CONV_2D"), (_FC_W, "FULLY_CONNECTED")],
    ids=["conv1", "conv2", "fc"],
)
def test_first_divergent_op_finds_planted_layer(
    int8_model: bytes, weights: str, expected: str
) -> None:
    expected = f"op {_weighted_op(int8_model, weights)} {expected}"
    tampered = _negate_weights(int8_model, weights)
    found = parity.first_divergent_op(int8_model, _inputs(1)[0], candidate_model=tampered)
    assert found is not None and found.startswith(expected)
    assert "(output '" in found


@pytest.mark.tf
def test_first_divergent_op_none_for_same_model(int8_model: bytes) -> None:
    assert parity.first_divergent_op(int8_model, _inputs(1)) is None


@pytest.mark.tf
def test_xnnpack_vs_ref_is_reported_not_raised(int8_model: bytes) -> None:
    c = parity.xnnpack_vs_ref(int8_model, _inputs())
    assert c.name == "litert_xnnpack_vs_ref" and c.units == "LSB"
    assert c.max_abs <= 1.0  # XNNPACK rounds requantization at most 1 LSB apart
    assert c.cos > 0.99


@pytest.mark.tf
def test_run_litert_rejects_unknown_resolver(int8_model: bytes) -> None:
    with pytest.raises(ConfigError, match="unknown LiteRT resolver 'gpu'"):
        verify.run_litert(int8_model, _inputs(1), "gpu")


@pytest.mark.tf
def test_first_divergent_op_refuses_other_graph(int8_model: bytes) -> None:
    pytest.importorskip("tensorflow")
    import tensorflow as tf

    tiny = tf.keras.Sequential([tf.keras.Input((12, 12, 2)), tf.keras.layers.Flatten()])
    other = tf.lite.TFLiteConverter.from_keras_model(tiny).convert()
    with pytest.raises(ConfigError, match="same graph"):
        parity.first_divergent_op(int8_model, _inputs(1)[0], candidate_model=other)


def test_models_without_reference_kernels_are_checked_against_builtin(
    wide_elu_model: bytes,
) -> None:
    from firmware_export.checks import BUILTIN_TOLERANCE_LSB, _tflm_parity

    sample = np.random.default_rng(0).integers(-128, 128, (1, 32, 32, 4), dtype=np.int8)
    with pytest.raises(MissingKernelError) as missing:
        verify.run_litert(wide_elu_model, sample, "ref")
    assert missing.value.ops == ("ELU",) and missing.value.resolver == "ref"
    assert isinstance(missing.value, ExportError)  # its exit code is unchanged
    # localisation runs on the same resolver as the comparison (it used REF and crashed)
    found = parity.first_divergent_op(wide_elu_model, sample[0], reference="builtin")
    assert found is None or " " in found
    result = _tflm_parity(verify, wide_elu_model, sample, 0)
    assert result["passed"] and result["max_abs"] <= BUILTIN_TOLERANCE_LSB
    assert "builtin" in result["reference"]


def test_a_missing_reference_kernel_skips_the_xnnpack_comparison_naming_the_op(
    wide_elu_model: bytes,
) -> None:
    from firmware_export.checks import VerifyInputs
    from firmware_export.verification import run_verification

    # no float samples: seeded int8 inputs; LiteRT target, so TFLM parity is not run either
    inp = VerifyInputs(wide_elu_model, None, None, None, None, False, runtime="litert")
    results = run_verification(inp, float_tolerance=1e-3, min_cosine=0.9, tflm_tolerance_lsb=0)
    entry = results["litert_xnnpack_vs_ref"]
    assert entry["skipped"] and entry["passed"]
    assert entry["reason"].endswith("no kernel for ELU in its 'ref' resolver")
