"""Real TF-MOT models (pruned + stripped, QAT, prune-preserving QAT) export to cortex-m4.

One tiny digits CNN (scikit-learn's 8x8 digits, channels-last), one epoch per stage, so the
whole module stays within a few tens of seconds beside TensorFlow's import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinyprune.errors import ConfigError

pytestmark = pytest.mark.tf

SPARSITY = 0.75
N_TRAIN = 512


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images[:N_TRAIN, :, :, None] / 16.0).astype(np.float32)
    return x, data.target[:N_TRAIN].astype(np.int64)


def _fit(model: Any, x: np.ndarray, y: np.ndarray, callbacks: list[Any] | None = None) -> None:
    import tf_keras as keras

    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=callbacks or [])


@pytest.fixture(scope="module")
def tfmot_files(
    digits: tuple[np.ndarray, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    import tensorflow as tf
    import tf_keras as keras

    from firmware_export.tfmot_compat import import_tfmot

    tfmot = import_tfmot()
    x, y = digits
    root = tmp_path_factory.mktemp("tfmot")
    keras.utils.set_random_seed(0)
    base = keras.Sequential(
        [
            keras.layers.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    schedule = tfmot.sparsity.keras.ConstantSparsity(SPARSITY, 0, frequency=1)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(base, pruning_schedule=schedule)
    _fit(pruned, x, y, [tfmot.sparsity.keras.UpdatePruningStep()])
    files = {k: root / n for k, n in [("unstripped", "u.h5"), ("stripped", "s.h5")]}
    pruned.save(files["unstripped"])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    stripped.save(files["stripped"])
    qat = tfmot.quantization.keras.quantize_model(stripped)
    _fit(qat, x, y)
    files |= {"qat_h5": root / "qat.h5", "qat_keras": root / "qat.keras"}
    qat.save(files["qat_h5"])
    qat.save(files["qat_keras"])
    scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    annotated = tfmot.quantization.keras.quantize_annotate_model(stripped)
    pqat = tfmot.quantization.keras.quantize_apply(annotated, scheme)
    _fit(pqat, x, y)
    files["pqat_sm"] = root / "pqat_sm"
    tf.saved_model.save(pqat, str(files["pqat_sm"]))
    return files


def _export(path: Path, x: np.ndarray, out: Path) -> dict[str, Any]:
    from firmware_export import ExportOptions, export

    opts = ExportOptions(calib_cap=64, verify_samples=8)
    result = export(path, x[:64], target="cortex-m4", out_dir=out, options=opts)
    report = json.loads((out / "report.json").read_text())
    assert report["verify"]["tflm_vs_litert_ref"]["passed"]
    assert report["verify"]["int8_vs_float"]["cos"] > 0.9
    assert result.fits and (out / "model_data.h").is_file()
    return report


def test_stripped_pruned_h5_exports_with_its_zeros(
    tfmot_files: dict[str, Path], digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    report = _export(tfmot_files["stripped"], digits[0], tmp_path / "run")
    # kernels 75 % zero; biases (34 of 1,962 params) are not pruned
    assert report["nonzero_params"] < 0.3 * report["params"]


def test_qat_h5_loads_in_quantize_scope_and_exports(
    tfmot_files: dict[str, Path], digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    report = _export(tfmot_files["qat_h5"], digits[0], tmp_path / "run")
    assert report["params"] > 1900


def test_pqat_saved_model_keeps_sparsity(
    tfmot_files: dict[str, Path], digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    report = _export(tfmot_files["pqat_sm"], digits[0], tmp_path / "run")
    assert report["nonzero_params"] < 0.3 * report["params"]


def test_qat_keras_file_names_tfmot_bug_and_the_way_out(
    tfmot_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tinyprune.cli import main

    np.save(tmp_path / "c.npy", np.zeros((2, 8, 8, 1), np.float32))
    args = ["export", str(tfmot_files["qat_keras"]), "--calib", str(tmp_path / "c.npy")]
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "expected 5 variables, but received 3" in err and "SavedModel" in err
    assert not (tmp_path / "run").exists()


def test_unstripped_pruning_wrappers_keep_the_strip_hint(tfmot_files: dict[str, Path]) -> None:
    from firmware_export.keras_source import load_keras

    with pytest.raises(ConfigError, match=r"strip_pruning\(model\) before saving"):
        load_keras(tfmot_files["unstripped"])


def test_tfmot_import_does_not_switch_keras_for_the_process() -> None:
    """TF-MOT's own import sets TF_USE_LEGACY_KERAS=1; ours leaves env and tf.keras alone."""
    code = (
        "import os, tensorflow as tf\n"
        "from firmware_export.tfmot_compat import import_tfmot\n"
        "tfmot = import_tfmot()\n"
        "print(os.environ.get('TF_USE_LEGACY_KERAS'), tf.keras.__version__[0])\n"
        "from tensorflow_model_optimization.python.core.keras import compat\n"
        "compat._get_keras_instance()\n"  # what the plain import does: the switch is real
        "print(os.environ.get('TF_USE_LEGACY_KERAS'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split()
    assert lines == ["None", "3", "1"]
