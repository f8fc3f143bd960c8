"""Stage 3: SavedModel -> full-int8 TFLite (int8 weights, activations, input and output).

Calibration uses the real samples given by the user (all of them, up to a cap), fed in the
converted model's channels-last layout. Weights are quantized per channel where the op
allows it (TFLiteConverter's default for conv and depthwise conv).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from firmware_export.convert import quiet_tensorflow
from firmware_export.outputs import order_outputs_by_signature
from tinyprune.errors import ExportError, UnsupportedOpError

_TF_OP = re.compile(r"tf\.([A-Za-z0-9_]+)")
_NOT_BUILTIN = re.compile(r"'tf\.([A-Za-z0-9_]+)' op is neither a custom op nor a flex op")
_LOCATION = re.compile(r'"(model(?:_\d+)?/[^"@/]+/[^"@]*)@')


def quantize_int8(
    saved_model: Path,
    calib_channels_last: np.ndarray,
    *,
    per_channel: bool = True,
    sparse: bool = False,
    describe: Callable[[str], str | None] | None = None,
) -> bytes:
    """Convert with TFLiteConverter to a full-int8 model; return the flatbuffer bytes.

    The model's outputs come in the SavedModel's order (``output_0, output_1, ...``), which the
    converter does not keep by itself (see :mod:`firmware_export.outputs`).

    With ``sparse`` the converter also stores mostly-zero weights in TFLite's sparse encoding
    (``EXPERIMENTAL_SPARSITY``; LiteRT densifies them at load, TFLM cannot read them).
    ``describe`` maps a converter location (``model/tf.math.atan/Atan``) to the PyTorch layer
    it comes from (:meth:`firmware_export.layer_names.LayerNames.describe`), for the errors.

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
            raise _not_builtin(text, describe) from e
        msg = f"TFLiteConverter failed: {type(e).__name__}: {text.splitlines()[0] if text else ''}"
        raise ExportError(msg, stage="quantize") from e
    # the converter lays outputs out in the string order of their signature keys
    from firmware_export.int8_elu import quantize_elu_islands

    return quantize_elu_islands(order_outputs_by_signature(model_bytes))


def _not_builtin(text: str, describe: Callable[[str], str | None] | None) -> UnsupportedOpError:
    """Exit 4 naming the TensorFlow ops without a TFLite builtin and, when known, their layers."""
    ops = sorted(set(_NOT_BUILTIN.findall(text)))
    if not ops:
        ops = sorted(set(_TF_OP.findall(text)) - {"lite", "experimental", "math", "nn"})
    layers: list[str] = []
    for where in _LOCATION.findall(text):
        label = describe(where) if describe is not None else None
        if label is not None and label not in layers:
            layers.append(label)
    who = f"layer {', '.join(repr(x) for x in layers)}" if layers else "the model"
    msg = (
        f"{who} converts to TensorFlow ops that no TFLite builtin implements "
        f"({', '.join(ops) or 'see the converter log'}), so no int8 TFLite model can be built; "
        "nothing was emitted. Rewrite the layer with supported ops (3-D pooling as 2-D "
        "pooling, atan2 by a polynomial or a lookup, ...) or change the model"
    )
    return UnsupportedOpError(msg, ops=tuple(ops), stage="quantize")
