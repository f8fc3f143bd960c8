"""TFLM op set, op check, arena measurement and runs, on tiny models converted by TensorFlow."""

from __future__ import annotations

import struct

import numpy as np
import pytest

pytest.importorskip("tflite_micro")
pytest.importorskip("ai_edge_litert")

from conftest import cached_model  # noqa: E402

from firmware_export import tflm  # noqa: E402
from firmware_export.tflite_model import parse_tflite  # noqa: E402
from firmware_export.verify import run_litert  # noqa: E402
from tinyprune.errors import ConfigError, ExportError, UnsupportedOpError  # noqa: E402

pytestmark = pytest.mark.tf


def _keras_conv3d() -> bytes:
    """A float model with a CONV_3D builtin (TFLM has no kernel for it)."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((4, 8, 8, 1)),
            tf.keras.layers.Conv3D(2, 3, name="c3d"),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(2),
        ]
    )
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


@pytest.fixture(scope="session")
def conv3d_model(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return cached_model(_keras_conv3d, tmp_path_factory, "conv3d_float.tflite")


@pytest.fixture(scope="module")
def arena(int8_model: bytes) -> tflm.ArenaMeasurement:
    return tflm.measure_arena(int8_model)


def _inputs(n: int = 6) -> np.ndarray:
    return np.random.default_rng(1).integers(-128, 128, (n, 12, 12, 2)).astype(np.int8)


def test_builtin_ops_read_from_binary() -> None:
    ops = tflm.tflm_builtin_ops()
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "PAD"} <= ops
    assert not {"CONV_3D", "CONV_3D_TRANSPOSE", "CUSTOM"} & ops
    assert "ETHOSU" not in ops  # a TFLM registration that is not a TFLite builtin
    assert tflm.tflm_builtin_ops() is ops  # cached


def test_check_ops_passes_and_lists_ops(int8_model: bytes) -> None:
    ops = tflm.check_ops(int8_model, "tflm", "cortex-m4")
    assert ops == sorted(set(ops))
    assert {"CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED"} <= set(ops)


def test_check_ops_rejects_conv3d_on_tflm(conv3d_model: bytes) -> None:
    with pytest.raises(UnsupportedOpError) as info:
        tflm.check_ops(conv3d_model, "tflm", "cortex-m4", layer_hints={"c3d": "features.0"})
    err = info.value
    assert err.exit_code == 4
    assert err.ops == ("CONV_3D",)
    assert err.target == "cortex-m4"
    text = str(err)
    assert "CONV_3D" in text and "layer 'features.0'" in text
    assert "--target rpi4" in text and "physnet_2d" in text


def test_check_ops_names_output_tensor_without_hints(conv3d_model: bytes) -> None:
    model = parse_tflite(conv3d_model)
    out_name = model.tensors[model.ops[0].outputs[0]].name
    with pytest.raises(UnsupportedOpError, match="output tensor") as info:
        tflm.check_ops(conv3d_model, "tflm", "cortex-m4")
    assert out_name in str(info.value)


def test_check_ops_accepts_conv3d_on_litert(conv3d_model: bytes) -> None:
    assert "CONV_3D" in tflm.check_ops(conv3d_model, "litert", "rpi4")


def test_check_ops_rejects_unknown_runtime(int8_model: bytes) -> None:
    with pytest.raises(ConfigError, match="expected 'tflm' or 'litert'"):
        tflm.check_ops(int8_model, "tvm", "x")


def test_arena_smallest_is_tight(int8_model: bytes, arena: tflm.ArenaMeasurement) -> None:
    assert tflm.tflm_runs_in(int8_model, arena.smallest_bytes)
    assert not tflm.tflm_runs_in(
        int8_model, arena.smallest_bytes - tflm.ARENA_STEP
    )  # bisection step
    assert not tflm.tflm_runs_in(int8_model, arena.smallest_bytes - 64)


def test_arena_recorded_close_to_smallest(arena: tflm.ArenaMeasurement) -> None:
    assert "Arena allocation total" in arena.allocations
    assert f"total {arena.recorded_bytes} bytes" in arena.allocations
    # Prepare needs a few hundred bytes of temporaries the end-of-run record no longer shows.
    assert abs(arena.smallest_bytes - arena.recorded_bytes) <= 512
    assert arena.needed_bytes == max(arena.smallest_bytes, arena.recorded_bytes)


def test_run_tflm_matches_litert_ref_bit_exactly(int8_model: bytes) -> None:
    x = _inputs()
    out = tflm.run_tflm(int8_model, x)
    assert out.shape == (6, 4) and out.dtype == np.int8
    np.testing.assert_array_equal(out, run_litert(int8_model, x, "ref"))
    np.testing.assert_array_equal(tflm.run_tflm(int8_model, list(x)), out)
    assert len({row.tobytes() for row in out}) > 1  # inputs really differ


def test_run_tflm_in_too_small_arena_fails_clearly(
    int8_model: bytes, arena: tflm.ArenaMeasurement
) -> None:
    with pytest.raises(ExportError, match="too small"):
        tflm.run_tflm(int8_model, _inputs(1), arena_bytes=arena.smallest_bytes - 64)


def test_run_tflm_rejects_float_inputs(int8_model: bytes) -> None:
    with pytest.raises(ConfigError, match="expects int8"):
        tflm.run_tflm(int8_model, np.zeros((1, 12, 12, 2), np.float32))


def test_tflm_tensors_holds_intermediates(int8_model: bytes) -> None:
    model = parse_tflite(int8_model)
    values = tflm.tflm_tensors(int8_model, _inputs(1)[0])
    for op in model.ops:
        t = model.tensors[op.outputs[0]]
        assert values[t.index].shape == t.shape
    final = values[model.outputs[0]]
    np.testing.assert_array_equal(final, tflm.run_tflm(int8_model, _inputs(1)))


def test_tiny_arena_is_a_shortage_not_a_crash(int8_model: bytes) -> None:
    # The host runtime segfaults after reporting the shortage; that still means "does not fit".
    assert tflm.tflm_runs_in(int8_model, 64) is False


def _with_pool_scale(model: bytes, new_scale: float) -> bytes:
    """Copy whose first occurrence of the pooling input's scale is replaced (a broken model)."""
    parsed = parse_tflite(model)
    (pool,) = [op for op in parsed.ops if op.name == "MAX_POOL_2D"]
    raw = struct.pack("<f", parsed.tensors[pool.inputs[0]].scale[0])
    at = model.find(raw)
    assert at >= 0
    return model[:at] + struct.pack("<f", new_scale) + model[at + 4 :]


def test_broken_model_is_reported_with_failing_node(int8_model: bytes) -> None:
    broken = _with_pool_scale(int8_model, 1e36)
    with pytest.raises(ExportError, match="Node MAX_POOL_2D") as info:
        tflm.run_tflm(broken, _inputs(1))
    assert "too small" not in str(info.value)
    with pytest.raises(ExportError, match="not for lack of arena"):
        tflm.tflm_runs_in(broken, 1 << 16)


def test_tflm_tensors_sizes_its_arena_for_all_preserved_tensors(wide_elu_model: bytes) -> None:
    model = parse_tflite(wide_elu_model)
    assert sum(t.nbytes for t in model.tensors) > tflm.DEFAULT_HOST_ARENA
    sample = np.random.default_rng(0).integers(-128, 128, (32, 32, 4), dtype=np.int8)
    values = tflm.tflm_tensors(wide_elu_model, sample)
    np.testing.assert_array_equal(
        values[model.outputs[0]], tflm.run_tflm(wide_elu_model, sample[None])
    )
