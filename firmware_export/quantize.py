"""Stage 3: SavedModel -> full-int8 TFLite (int8 weights, activations, input and output).

Calibration uses the real samples given by the user (all of them, up to a cap), fed in the
converted model's channels-last layout. Weights are quantized per channel where the op
allows it (TFLiteConverter's default for conv and depthwise conv).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from firmware_export.convert import quiet_tensorflow
from firmware_export.outputs import order_outputs_by_signature
from tinyprune.errors import ExportError, UnsupportedOpError

_TF_OP = re.compile(r"tf\.([A-Za-z0-9_]+)")


def quantize_int8(
    saved_model: Path,
    calib_channels_last: np.ndarray,
    *,
    per_channel: bool = True,
    sparse: bool = False,
) -> bytes:
    """Convert with TFLiteConverter to a full-int8 model; return the flatbuffer bytes.

    The model's outputs come in the SavedModel's order (``output_0, output_1, ...``), which the
    converter does not keep by itself (see :mod:`firmware_export.outputs`).

    With ``sparse`` the converter also stores mostly-zero weights in TFLite's sparse encoding
    (``EXPERIMENTAL_SPARSITY``; LiteRT densifies them at load, TFLM cannot read them).

    Raises:
        UnsupportedOpError: the graph needs TensorFlow ops that are not TFLite builtins.
        ExportError: any other converter failure (stage "quantize").
    """
    quiet_tensorflow()
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if sparse:
        converter.optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    converter._experimental_disable_per_channel = not per_channel

    def representative() -> Iterator[list[np.ndarray]]:
        for sample in calib_channels_last:
            yield [sample[None].astype(np.float32)]

    converter.representative_dataset = representative
    try:
        model_bytes = bytes(converter.convert())
    except Exception as e:
        text = str(e)
        if "FLEX" in text.upper() or "not supported" in text:
            ops = sorted(set(_TF_OP.findall(text)) - {"lite", "experimental"})
            msg = (
                f"the converted graph needs TensorFlow ops that are not TFLite builtins: "
                f"{', '.join(ops) or 'see the converter log'}; "
                "rewrite those layers (e.g. 3-D pooling with 2-D pooling) or change the model"
            )
            raise UnsupportedOpError(msg, ops=tuple(ops), stage="quantize") from e
        msg = f"TFLiteConverter failed: {type(e).__name__}: {text.splitlines()[0] if text else ''}"
        raise ExportError(msg, stage="quantize") from e
    # the converter lays outputs out in the string order of their signature keys
    from firmware_export.int8_elu import quantize_elu_islands

    return quantize_elu_islands(order_outputs_by_signature(model_bytes))
