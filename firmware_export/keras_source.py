"""Keras models as an export source: ``.keras`` / ``.h5`` files and SavedModel folders -> int8.

Users who prune with TensorFlow Model Optimization (``prune_low_magnitude`` then
``strip_pruning``) hold a Keras 2 (``tf_keras``) model whose pruned weights are exactly zero.
Such a model needs no ONNX round trip: it is channels-last already, so it goes straight to a
SavedModel and through the same full-int8 conversion as the PyTorch route
(:func:`firmware_export.quantize.quantize_int8`). Symmetric int8 weight quantization maps 0.0
to 0, so the zeros survive and the report's non-zero counts see them.

Which Keras wrote a ``.keras`` file is read from its ``metadata.json`` (``keras_version``):
2.x files load with ``tf_keras`` (TF-MOT's Keras), 3.x files with ``keras``. ``.h5`` files are
Keras 2. A SavedModel folder is used as it is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from firmware_export.keras_safety import (
    ConfigScan,
    read_h5_config,
    read_keras_zip_config,
    refuse_code,
    scan_config,
)
from firmware_export.quantize import quantize_int8
from tinyprune.errors import ConfigError, ExportError

logger = logging.getLogger(__name__)

KERAS_SUFFIXES = (".keras", ".h5")


def is_keras_source(path: str | Path) -> bool:
    """True for a ``.keras`` / ``.h5`` file or a folder holding ``saved_model.pb``."""
    p = Path(path)
    return (p.is_file() and p.suffix in KERAS_SUFFIXES) or (p / "saved_model.pb").is_file()


def keras_major_version(path: Path) -> int:
    """Major Keras version that wrote a ``.keras`` zip (2 for ``.h5`` files)."""
    if path.suffix == ".h5":
        return 2
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("metadata.json"))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        msg = (
            f"{str(path)!r} is not a readable .keras file ({type(e).__name__}: {e}); "
            "save it with model.save('model.keras')"
        )
        raise ConfigError(msg) from e
    version = str(meta.get("keras_version", "3"))
    return int(version.split(".")[0]) if version.split(".")[0].isdigit() else 3


PRUNE_HINT = (
    " It holds TF-MOT pruning wrappers: call "
    "tfmot.sparsity.keras.strip_pruning(model) before saving."
)
QAT_KERAS_BUG = (
    "it is a TF-MOT quantization-aware (QAT) model saved as .keras, which TF-MOT 0.8.1 cannot "
    "load (its bug: \"Layer 'quantize_layer' expected 5 variables, but received 3\"); save it "
    "as a SavedModel instead: tf.saved_model.save(model, 'qat_model') and export that folder"
)


def check_keras_file(path: Path, *, trust_model_code: bool = False) -> ConfigScan:
    """Read a ``.keras`` / ``.h5`` config as JSON (nothing deserialised) and refuse code.

    Raises:
        ConfigError: code-carrying layers (unless trusted), TF-MOT pruning wrappers, or a
            QAT ``.keras`` (TF-MOT cannot load it).
    """
    config = read_h5_config(path) if path.suffix == ".h5" else read_keras_zip_config(path)
    scan = scan_config(config)
    where = f"the Keras model {str(path)!r}"
    if scan.tfmot_prune:
        msg = f"cannot load {where}:{PRUNE_HINT}"
        raise ConfigError(msg)
    if scan.tfmot_qat and path.suffix == ".keras":
        msg = f"cannot load {where}: {QAT_KERAS_BUG}"
        raise ConfigError(msg)
    refuse_code(scan, where, trust_model_code)
    return scan


def load_keras(path: Path, *, trust_model_code: bool = False) -> Any:
    """Load a ``.keras`` / ``.h5`` model with the Keras that wrote it (not compiled).

    The config is checked first (:func:`check_keras_file`); ``.keras`` files load with
    ``safe_mode=True`` unless ``trust_model_code``; TF-MOT QAT ``.h5`` files load inside
    ``tfmot.quantization.keras.quantize_scope()``.

    Raises:
        ConfigError: the file cannot be loaded or would run code (see :func:`check_keras_file`).
    """
    from firmware_export.convert import quiet_tensorflow

    scan = check_keras_file(path, trust_model_code=trust_model_code)
    quiet_tensorflow()
    if keras_major_version(path) == 2:
        import tf_keras as keras_mod
    else:
        import keras as keras_mod
    scope = contextlib.nullcontext()
    if scan.tfmot_qat:
        from firmware_export.tfmot_compat import quantize_scope

        scope = quantize_scope()
    kwargs = {} if path.suffix == ".h5" else {"safe_mode": not trust_model_code}
    try:
        with scope:
            return keras_mod.models.load_model(str(path), compile=False, **kwargs)
    except Exception as e:
        text = (str(e).splitlines()[0] if str(e) else "").rstrip(".")
        hint = PRUNE_HINT if "PruneLowMagnitude" in str(e) else ""
        msg = f"cannot load the Keras model {str(path)!r}: {type(e).__name__}: {text}.{hint}"
        raise ConfigError(msg) from e


def _input_shape(model: Any) -> tuple[int | None, ...]:
    inputs = model.inputs
    if len(inputs) != 1:
        msg = f"the Keras model has {len(inputs)} inputs; only single-input models are exported"
        raise ConfigError(msg)
    return tuple(inputs[0].shape)


def _check_calib(calib: np.ndarray, shape: tuple[int | None, ...], source: str) -> np.ndarray:
    data = np.asarray(calib, dtype=np.float32)
    want = tuple(shape[1:])
    ok = (
        data.ndim == len(shape)
        and len(data) > 0
        and all(w is None or w == g for w, g in zip(want, data.shape[1:], strict=True))
    )
    if not ok:
        msg = (
            f"calibration data has shape {data.shape} but {source} takes "
            f"(N, {', '.join('?' if w is None else str(w) for w in want)}) channels-last "
            "samples; pass NHWC data for Keras models"
        )
        raise ConfigError(msg)
    if not np.isfinite(data).all():
        msg = "calibration data contains NaN or infinite values"
        raise ConfigError(msg)
    return data


def _saved_model_outputs(
    saved_model: Path, calib: np.ndarray
) -> tuple[np.ndarray, tuple[int | None, ...]]:
    """Float output 0 of a SavedModel's ``serving_default`` signature, and its input shape."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model))
    sig = loaded.signatures.get("serving_default") if hasattr(loaded, "signatures") else None
    if sig is None:
        msg = f"the SavedModel {str(saved_model)!r} has no 'serving_default' signature"
        raise ConfigError(msg)
    specs = sig.structured_input_signature[1]
    if len(specs) != 1:
        msg = f"the SavedModel has {len(specs)} inputs; only single-input models are exported"
        raise ConfigError(msg)
    name, spec = next(iter(specs.items()))
    shape = tuple(spec.shape.as_list())
    data = _check_calib(calib, shape, f"SavedModel {str(saved_model)!r}")
    # a signature with a fixed batch (a model built for batch 1, as TFLM runs it) takes the
    # samples that many at a time
    step = shape[0] or len(data)
    if len(data) % step:
        msg = (
            f"the SavedModel takes batches of {step} samples; give a multiple of {step} "
            f"calibration samples (got {len(data)})"
        )
        raise ConfigError(msg)
    firsts = []
    for i in range(0, len(data), step):
        outs = sig(**{name: tf.constant(data[i : i + step])})
        firsts.append(np.asarray(outs[sorted(outs)[0]].numpy(), dtype=np.float32))
    return np.concatenate(firsts), shape


def _export_saved_model(model: Any, dest: Path, major: int) -> None:
    """Write a Keras model as a SavedModel (Keras 3: ``model.export``)."""
    import tensorflow as tf

    try:
        if major >= 3:
            model.export(str(dest), verbose=False)
        else:
            tf.saved_model.save(model, str(dest))
    except Exception as e:
        msg = f"cannot write the Keras model as a SavedModel: {type(e).__name__}: {e}"
        raise ExportError(msg, stage="convert") from e


def keras_to_int8(
    path: str | Path,
    calib_nhwc: np.ndarray,
    *,
    per_channel: bool = True,
    trust_model_code: bool = False,
) -> tuple[bytes, np.ndarray]:
    """Convert a Keras model or SavedModel to full int8 TFLite; also return float outputs.

    Args:
        path: A ``.keras`` / ``.h5`` file or a SavedModel folder.
        calib_nhwc: Float32 calibration samples in the model's own (channels-last) layout.
        per_channel: Per-channel weight quantization (as :func:`quantize_int8`).
        trust_model_code: Load models whose layers carry code (``Lambda``...); see
            :mod:`firmware_export.keras_safety`.

    Returns:
        ``(int8 flatbuffer, float reference outputs of output 0 on calib_nhwc)``.

    Raises:
        ConfigError: unreadable model, several inputs, or calibration of the wrong shape.
        UnsupportedOpError: ops that are not TFLite builtins. ExportError: converter failure.
    """
    src = Path(path)
    if (src / "saved_model.pb").is_file():
        from firmware_export.saved_model_safety import check_saved_model

        check_saved_model(src, trust_model_code)
        reference, _ = _saved_model_outputs(src, calib_nhwc)
        data = np.asarray(calib_nhwc, dtype=np.float32)
        return quantize_int8(src, data, per_channel=per_channel), reference
    if not (src.is_file() and src.suffix in KERAS_SUFFIXES):
        msg = (
            f"{str(src)!r} is neither a .keras/.h5 file nor a SavedModel folder "
            "(with saved_model.pb)"
        )
        raise ConfigError(msg)
    model = load_keras(src, trust_model_code=trust_model_code)
    data = _check_calib(calib_nhwc, _input_shape(model), f"Keras model {src.name!r}")
    out = model(data, training=False)
    first = out[0] if isinstance(out, list | tuple) else out
    reference = np.asarray(first, dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="tinyprune_keras_") as tmp:
        saved = Path(tmp) / "saved_model"
        _export_saved_model(model, saved, keras_major_version(src))
        logger.info("converting %s via a temporary SavedModel", src)
        return quantize_int8(saved, data, per_channel=per_channel), reference


__all__ = [
    "check_keras_file",
    "is_keras_source",
    "keras_major_version",
    "keras_to_int8",
    "load_keras",
]
