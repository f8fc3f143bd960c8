"""Hostile Keras files: a Lambda layer that would ``touch`` a marker is refused before it runs.

Each model's Lambda creates the marker when it is called, which happens while Keras builds the
model, i.e. on load. The marker made while building the file is removed before the test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinyprune.errors import ConfigError

pytestmark = pytest.mark.tf


def _touching_lambda(marker: Path) -> Any:
    # a plain lambda holding the path as a constant: marshalled with the model, runs on load
    return eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]")


def _lambda_model(keras: Any, marker: Path) -> Any:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.layers.Input((6, 6, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Lambda(_touching_lambda(marker), name="evil"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    marker.unlink(missing_ok=True)
    return model


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import tf_keras

    root = tmp_path_factory.mktemp("hostile")
    files = {"h5": root / "evil.h5", "sm": root / "evil_sm"}
    for kind, path in files.items():
        marker = root / f"PWNED_{kind}"
        model = _lambda_model(tf_keras, marker)
        model.save(path, save_format="h5" if kind == "h5" else "tf")
        marker.unlink(missing_ok=True)
    np.save(root / "calib.npy", np.random.default_rng(0).random((4, 6, 6, 1), np.float32))
    return files | {"root": root, "calib": root / "calib.npy"}


def _export(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from tinyprune.cli import main

    code = main(["export", *args])
    return code, capsys.readouterr().err


def test_h5_lambda_is_refused_before_it_runs(
    hostile: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code, err = _export(
        [str(hostile["h5"]), "--calib", str(hostile["calib"]), "--out", str(out)], capsys
    )
    assert code == 2
    assert "Lambda layer 'evil'" in err and "--trust-model-code" in err
    assert not (hostile["root"] / "PWNED_h5").exists()
    assert not out.exists()


def test_h5_lambda_loads_with_trust_model_code(
    hostile: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = [str(hostile["h5"]), "--calib", str(hostile["calib"]), "--out", str(out)]
    code, err = _export([*args, "--trust-model-code"], capsys)
    assert code == 0, err
    assert (hostile["root"] / "PWNED_h5").exists()  # trusted: the Lambda ran, as asked
    report = json.loads((out / "report.json").read_text())
    assert report["verify"]["tflm_vs_litert_ref"]["passed"]


def test_keras3_lambda_is_refused_and_safe_mode_stays_on(tmp_path: Path) -> None:
    import keras

    from firmware_export.keras_source import check_keras_file, load_keras

    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.keras"
    _lambda_model(keras, marker).save(path)
    marker.unlink(missing_ok=True)
    with pytest.raises(ConfigError, match=r"Lambda layer 'evil'.*--trust-model-code"):
        check_keras_file(path)
    with pytest.raises(ConfigError, match="--trust-model-code"):
        load_keras(path)
    assert not marker.exists()
    model = load_keras(path, trust_model_code=True)
    assert marker.exists() and model.layers[1].name == "evil"


def test_saved_model_with_a_lambda_layer_is_refused(hostile: dict[str, Path]) -> None:
    from firmware_export.keras_source import keras_to_int8

    calib = np.load(hostile["calib"])
    with pytest.raises(ConfigError, match=r"SavedModel.*Lambda layer 'evil'.*--trust-model-code"):
        keras_to_int8(hostile["sm"], calib)
    model_bytes, reference = keras_to_int8(hostile["sm"], calib, trust_model_code=True)
    assert reference.shape == (4, 3) and len(model_bytes) > 0
    # tf.saved_model.load runs the traced graph only, never the Lambda's Python
    assert not (hostile["root"] / "PWNED_sm").exists()


def test_saved_model_writing_a_file_is_refused(tmp_path: Path) -> None:
    import tensorflow as tf

    from firmware_export.keras_source import keras_to_int8

    marker = tmp_path / "WRITTEN"

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x: Any) -> Any:
            with tf.control_dependencies([tf.io.write_file(str(marker), "x")]):
                return tf.identity(x)

    module = Writer()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures=module.serve)
    with pytest.raises(ConfigError, match=r"WriteFile op .*--trust-model-code"):
        keras_to_int8(tmp_path / "sm", np.zeros((2, 4), np.float32))
    assert not marker.exists()


def test_clean_saved_model_has_no_findings(tmp_path: Path) -> None:
    """The saver's own SaveV2 / MergeV2Checkpoints are not mistaken for hostile writes."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    from firmware_export.saved_model_safety import graph_findings

    class Plain(tf.Module):
        def __init__(self) -> None:
            self.w = tf.Variable(tf.ones([4]))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x: Any) -> Any:
            return x * self.w

    module = Plain()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures=module.serve)
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((tmp_path / "sm" / "saved_model.pb").read_bytes())
    meta = sm.meta_graphs[0]
    assert graph_findings(meta) == []
    ops = {n.op for f in meta.graph_def.library.function for n in f.node_def}
    assert "SaveV2" in ops  # the scan did see the saver and let it pass


def test_foreign_module_in_h5_config_is_refused(hostile: dict[str, Path], tmp_path: Path) -> None:
    """A config that names a module outside Keras (the new-format loaders import it) is code."""
    import h5py

    from firmware_export.keras_source import check_keras_file

    path = tmp_path / "module.h5"
    path.write_bytes(hostile["h5"].read_bytes())
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        layers = config["config"]["layers"]
        layers[:] = [layer for layer in layers if layer["class_name"] != "Lambda"]
        layers[1]["config"]["kernel_initializer"]["module"] = "os"
        f.attrs["model_config"] = json.dumps(config)
    with pytest.raises(ConfigError, match=r"module 'os'.*--trust-model-code"):
        check_keras_file(path)


def test_weights_only_h5_is_a_config_error(tmp_path: Path) -> None:
    import h5py

    from firmware_export.keras_source import check_keras_file

    path = tmp_path / "weights.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("w", data=np.zeros(3))
    with pytest.raises(ConfigError, match="holds no model_config"):
        check_keras_file(path)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ConfigError, match="not a readable HDF5"):
        check_keras_file(tmp_path / "junk.h5")
