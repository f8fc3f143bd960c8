"""Keras / SavedModel sources: TF-MOT-style 80 %-zero weights survive full-int8 conversion.

Here ``prune_low_magnitude`` + ``strip_pruning`` is simulated by zeroing the 80 %
smallest-magnitude weights of each kernel of a ``tf_keras`` model, which is what a stripped model
holds (plain layers, exact zeros); real TF-MOT models are in test_tfmot_sources.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinyprune.errors import ConfigError

SPARSITY = 0.8
N_CALIB = 16
# int8 vs float cosine floor: a 3-layer net with per-channel weights keeps cos > 0.99 in
# practice; 0.95 leaves room for calibration rounding while still catching a wrong layout.
MIN_COSINE = 0.95


def _keras_model() -> Any:
    keras = pytest.importorskip("tf_keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.layers.Input((8, 8, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            kernel = weights[0]
            kernel[np.abs(kernel) < np.quantile(np.abs(kernel), SPARSITY)] = 0.0
            weights[1] = np.linspace(-0.1, 0.1, weights[1].size).astype(np.float32)
            layer.set_weights(weights)
    return model


@pytest.fixture(scope="module")
def calib() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((N_CALIB, 8, 8, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    model = _keras_model()
    path = tmp_path_factory.mktemp("keras") / "pruned.keras"
    model.save(path)
    return path, model


@pytest.fixture(scope="module")
def converted(keras_file: tuple[Path, Any], calib: np.ndarray) -> tuple[bytes, np.ndarray]:
    from firmware_export.keras_source import keras_to_int8

    return keras_to_int8(keras_file[0], calib)


def _kernel_nonzeros(model: Any) -> tuple[int, int]:
    kernels = [layer.get_weights()[0] for layer in model.layers if layer.get_weights()]
    return sum(k.size for k in kernels), sum(int(np.count_nonzero(k)) for k in kernels)


@pytest.mark.tf
def test_keras2_file_is_detected(keras_file: tuple[Path, Any]) -> None:
    from firmware_export.keras_source import is_keras_source, keras_major_version

    assert keras_major_version(keras_file[0]) == 2
    assert is_keras_source(keras_file[0])


@pytest.mark.tf
def test_zeros_survive_int8_and_report_counts_them(
    converted: tuple[bytes, np.ndarray], keras_file: tuple[Path, Any]
) -> None:
    from firmware_export.analyze import analyze_tflite
    from firmware_export.tflite_model import parse_tflite

    model_bytes, _ = converted
    analysis = analyze_tflite(model_bytes)
    n_kernel, nz_kernel = _kernel_nonzeros(keras_file[1])
    n_bias = 8 + 16 + 10
    assert analysis.params == n_kernel + n_bias
    # every float zero stays an int8 zero; a tiny non-zero weight may round to 0 as well
    assert nz_kernel - 3 <= analysis.nonzero_params - n_bias <= nz_kernel
    assert analysis.density < 1 - SPARSITY + 0.05
    parsed = parse_tflite(model_bytes)
    weights = [
        parsed.constant(op.inputs[1])
        for op in parsed.ops
        if op.name in ("CONV_2D", "FULLY_CONNECTED")
    ]
    assert len(weights) == 3
    for w in weights:
        assert w is not None and w.dtype == np.int8
        assert np.mean(w == 0) >= SPARSITY - 0.01
    assert analysis.nonzero_macs < 0.25 * analysis.macs


@pytest.mark.tf
def test_reference_outputs_and_int8_agree(
    converted: tuple[bytes, np.ndarray], keras_file: tuple[Path, Any], calib: np.ndarray
) -> None:
    from firmware_export.tflite_model import parse_tflite
    from firmware_export.verify import dequantize, quantize_input, run_litert

    model_bytes, reference = converted
    np.testing.assert_allclose(reference, keras_file[1](calib).numpy(), rtol=1e-5, atol=1e-6)
    parsed = parse_tflite(model_bytes)
    inp, out = parsed.tensors[parsed.inputs[0]], parsed.tensors[parsed.outputs[0]]
    assert inp.shape == (1, 8, 8, 3) and inp.dtype == "INT8" and out.dtype == "INT8"
    q = run_litert(model_bytes, quantize_input(calib, inp.scale[0], inp.zero_point[0]), "ref")
    got = dequantize(q, out.scale[0], out.zero_point[0]).reshape(reference.shape)
    cos = float(got.ravel() @ reference.ravel()) / (np.linalg.norm(got) * np.linalg.norm(reference))
    assert cos > MIN_COSINE


@pytest.mark.tf
def test_saved_model_dir_gives_the_same_model(
    keras_file: tuple[Path, Any],
    calib: np.ndarray,
    converted: tuple[bytes, np.ndarray],
    tmp_path: Path,
) -> None:
    import tensorflow as tf

    from firmware_export.keras_source import is_keras_source, keras_to_int8

    saved = tmp_path / "sm"
    tf.saved_model.save(keras_file[1], str(saved))
    assert is_keras_source(saved)
    model_bytes, reference = keras_to_int8(saved, calib)
    np.testing.assert_allclose(reference, converted[1], rtol=1e-5, atol=1e-6)
    assert len(model_bytes) == len(converted[0])


@pytest.mark.tf
def test_fixed_batch_saved_model_takes_its_samples_a_batch_at_a_time(
    keras_file: tuple[Path, Any],
    calib: np.ndarray,
    converted: tuple[bytes, np.ndarray],
    tmp_path: Path,
) -> None:
    """A SavedModel built for batch 1 (as TFLM runs it) gets every sample, one by one."""
    import tensorflow as tf
    import tf_keras as keras

    from firmware_export.keras_source import keras_to_int8

    one = keras.Sequential([keras.layers.Input((8, 8, 3), batch_size=1), *keras_file[1].layers])
    saved = tmp_path / "batch1"
    tf.saved_model.save(one, str(saved))
    _, reference = keras_to_int8(saved, calib)
    np.testing.assert_allclose(reference, converted[1], rtol=1e-5, atol=1e-6)
    two = keras.Sequential([keras.layers.Input((8, 8, 3), batch_size=2), *keras_file[1].layers])
    tf.saved_model.save(two, str(tmp_path / "batch2"))
    with pytest.raises(ConfigError, match="batches of 2 samples; give a multiple of 2"):
        keras_to_int8(tmp_path / "batch2", calib[:3])


@pytest.mark.tf
def test_wrong_calibration_shape_is_rejected(keras_file: tuple[Path, Any]) -> None:
    from firmware_export.keras_source import keras_to_int8

    nchw = np.zeros((2, 3, 8, 8), np.float32)
    with pytest.raises(ConfigError, match=r"shape \(2, 3, 8, 8\).*\(N, 8, 8, 3\) channels-last"):
        keras_to_int8(keras_file[0], nchw)


def test_not_a_keras_source_is_rejected(tmp_path: Path) -> None:
    from firmware_export.keras_source import is_keras_source, keras_to_int8

    bad = tmp_path / "model.txt"
    bad.write_text("x")
    assert not is_keras_source(bad)
    with pytest.raises(ConfigError, match="neither a .keras/.h5 file nor a SavedModel"):
        keras_to_int8(bad, np.zeros((1, 8, 8, 3), np.float32))


def test_corrupt_keras_file_is_rejected(tmp_path: Path) -> None:
    from firmware_export.keras_source import keras_major_version

    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a readable .keras file"):
        keras_major_version(bad)


@pytest.mark.tf
def test_cli_exports_a_pruned_keras_model_to_tflm(
    keras_file: tuple[Path, Any], calib: np.ndarray, tmp_path: Path, capsys
) -> None:
    """`tinyprune export model.keras` runs the whole backbone and says what sparsity buys."""
    import json

    from tinyprune.cli import main

    np.save(tmp_path / "calib.npy", calib)
    out = tmp_path / "run"
    assert (
        main(
            [
                "export",
                str(keras_file[0]),
                "--calib",
                str(tmp_path / "calib.npy"),
                "--target",
                "cortex-m4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["nonzero_params"] < 0.35 * report["params"]
    assert report["verify"]["tflm_vs_litert_ref"]["passed"]
    assert report["verify"]["int8_vs_float"]["cos"] > MIN_COSINE
    assert "do not shrink" in report["sparsity_note"] and "do not shrink" in capsys.readouterr().err
    assert (out / "model_data.h").is_file()
