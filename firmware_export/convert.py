"""Stage 2: ONNX -> TensorFlow SavedModel with channels-last I/O (onnx2tf), strictly offline.

onnx2tf 1.x downloads 20 sample images whenever the model input looks like a small RGB batch,
to run a dummy inference it uses for its layout heuristics. We hand it the project's own
calibration samples instead, so nothing ever goes to the network.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import numpy as np

from tinyprune.errors import ExportError

log = logging.getLogger(__name__)

_ONNX2TF_SAMPLES = 20


@contextlib.contextmanager
def _offline_sample_images(calib_channels_last: np.ndarray) -> Iterator[None]:
    """Replace onnx2tf's sample-image download with (repeated) calibration samples."""
    import onnx2tf.onnx2tf as entry
    import onnx2tf.utils.common_functions as common

    reps = -(-_ONNX2TF_SAMPLES // len(calib_channels_last))
    data = np.concatenate([calib_channels_last] * reps)[:_ONNX2TF_SAMPLES].astype(np.float32)

    def local_samples() -> np.ndarray:
        return data

    saved = entry.download_test_image_data, common.download_test_image_data
    entry.download_test_image_data = common.download_test_image_data = local_samples
    try:
        yield
    finally:
        entry.download_test_image_data, common.download_test_image_data = saved


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ and Python logging off the terminal (before its first import)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # deterministic float kernels


def _raise_convert_error(
    e: BaseException, log_text: str, onnx_path: Path, modules: frozenset[str] | None
) -> NoReturn:
    """Exit 2 for a full disk, 4 for a node onnx2tf cannot convert, else a clean ExportError."""
    from firmware_export.model_checks import clean_message, onnx2tf_unsupported
    from firmware_export.publish import disk_error

    disk = disk_error(e, onnx_path.parent.parent)
    if disk is not None:
        raise disk from e
    unsupported = onnx2tf_unsupported(log_text, e, onnx_path, modules)
    if unsupported is not None:
        raise unsupported from e
    tail = " | ".join(line.strip() for line in log_text.splitlines()[-6:] if line.strip())
    msg = clean_message(
        f"onnx2tf could not convert the ONNX model ({type(e).__name__}: {e}). onnx2tf said: {tail}",
        onnx_path.parent,
    )
    raise ExportError(msg, stage="convert") from e


def convert_to_saved_model(
    onnx_path: Path,
    out_dir: Path,
    calib_channels_last: np.ndarray,
    *,
    layer_map: dict[str, str] | None = None,
    modules: frozenset[str] | None = None,
) -> Path:
    """Convert ``onnx_path`` into a SavedModel at ``out_dir``.

    Returns the float32 .tflite it also wrote. ``layer_map``, when given, is filled with
    ``{Keras layer name: ONNX node name}`` (see :mod:`firmware_export.layer_names`);
    ``modules`` (the model's module names) lets a conversion error name the PyTorch layer.

    Raises:
        ExportError: onnx2tf failed (stage "convert"); the message carries its last log lines.
    """
    quiet_tensorflow()
    import onnx2tf
    import tf_keras

    # Keras numbers layer names per process (model, model_1, ...) and those names end up in the
    # flatbuffer: a fresh session makes a second export in one process byte-identical.
    tf_keras.backend.clear_session()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    captured = io.StringIO()
    import onnx

    from firmware_export.layer_names import record_onnx2tf_layers

    op_types = {n.op_type for n in onnx.load(str(onnx_path), load_external_data=False).graph.node}
    try:
        with (
            _offline_sample_images(calib_channels_last),
            contextlib.redirect_stdout(captured),
            record_onnx2tf_layers(op_types) as recorded,
        ):
            onnx2tf.convert(
                input_onnx_file_path=str(onnx_path),
                output_folder_path=str(out_dir),
                output_signaturedefs=True,
                copy_onnx_input_output_names_to_tflite=True,
                non_verbose=True,
                not_use_onnxsim=True,  # export_onnx already simplified the graph in-process
            )
    except BaseException as e:  # onnx2tf calls sys.exit(1) on failure
        if isinstance(e, KeyboardInterrupt):
            raise
        _raise_convert_error(e, captured.getvalue(), onnx_path, modules)
    if layer_map is not None:
        layer_map.update(recorded)
    log.debug("onnx2tf output:\n%s", captured.getvalue())
    float_tflite = out_dir / f"{onnx_path.stem}_float32.tflite"
    if not (out_dir / "saved_model.pb").is_file() or not float_tflite.is_file():
        msg = f"onnx2tf finished without writing a SavedModel in {out_dir}"
        raise ExportError(msg, stage="convert")
    for extra in out_dir.glob("*_float16.tflite"):
        extra.unlink()
    return float_tflite
