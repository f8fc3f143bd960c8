"""Keras twins of tinyprune's TFLM-native rPPG net, for the TF-MOT route (bench/fit_bench.py).

``physnet_2p1d_twin`` is ``tinyprune.models.rppg.physnet_2p1d`` in tf_keras, channels-last: the
same layers, widths, kernels and biases (so the same parameter count), frame-stacked input
``(T*H, W, C)`` and output ``(T,)``. PyTorch folds the frames of a clip into the batch axis for
the per-frame (spatial) convolutions and views them as ``(B, C, T, H*W)`` for the temporal ones;
channels-last, both views are plain reshapes of one buffer (``[b, t, h, w, c]``), done here by
:class:`FoldFrames`, a weightless reshape that may change the batch axis (Keras' ``Reshape``
keeps it). TF-MOT prunes and quantizes the layers it supports; ``FoldFrames`` and ``ELU`` are
left as they are (TF-MOT's documented route for layers it does not know), and the int8
converter quantizes every op anyway.
"""

from __future__ import annotations

from typing import Any

import tf_keras as keras

#: Layer classes TF-MOT's pruning and 8-bit QAT registries support (annotated in the twin).
SUPPORTED = ("Conv2D", "Dense", "BatchNormalization", "ReLU", "MaxPooling2D")


@keras.utils.register_keras_serializable(package="tinyprune_bench")
class FoldFrames(keras.layers.Layer):
    """``tf.reshape(x, shape)``, first axis included: frames into or out of the batch axis."""

    def __init__(self, shape: tuple[int, ...], **kwargs: Any) -> None:
        """Reshape to ``shape`` (its first entry -1: any batch)."""
        super().__init__(**kwargs)
        self.target = tuple(int(s) for s in shape)

    def call(self, x: Any) -> Any:
        """The reshaped tensor."""
        import tensorflow as tf

        return tf.reshape(x, self.target)

    def get_config(self) -> dict[str, Any]:
        """Keras config (the target shape)."""
        return super().get_config() | {"shape": list(self.target)}


def _conv_bn_relu(x: Any, channels: int, kernel: Any) -> Any:
    layers = keras.layers
    x = layers.Conv2D(channels, kernel, padding="same")(x)
    return layers.ReLU()(layers.BatchNormalization()(x))


class _Fold:
    """Reshape factories for one batch size (None: any, as in training; 1: static, to export).

    The int8 converter takes an unknown first axis for the batch and sets it to 1, which is
    wrong once frames sit in that axis, so the exported twin is built with batch 1.
    """

    def __init__(self, batch: int | None) -> None:
        self.batch = batch

    def frames(self, t: int, h: int, w: int, c: int) -> Any:
        """To frames ``(B*T, h, w, c)``."""
        return FoldFrames((-1 if self.batch is None else self.batch * t, h, w, c))

    def time(self, t: int, hw: int, c: int) -> Any:
        """To the time view ``(B, T, h*w, c)``."""
        return FoldFrames((-1 if self.batch is None else self.batch, t, hw, c))


def _block(x: Any, cout: int, t: int, hw: tuple[int, int], fold: _Fold) -> Any:
    """Block2p1d: per-frame 3x3 conv-BN-ReLU, then a (3, 1) temporal conv-BN-ReLU."""
    h, w = hw
    x = _conv_bn_relu(x, cout, 3)  # frames (B*T, h, w, mid = cout)
    x = fold.time(t, h * w, cout)(x)
    x = _conv_bn_relu(x, cout, (3, 1))
    return fold.frames(t, h, w, cout)(x)


def _pool_spatem(x: Any, t: int, hw: tuple[int, int], c: int, fold: _Fold) -> Any:
    layers = keras.layers
    h, w = hw[0] // 2, hw[1] // 2
    x = layers.MaxPooling2D(2)(x)
    x = fold.time(t, h * w, c)(x)
    x = layers.MaxPooling2D((2, 1))(x)
    return fold.frames(t // 2, h, w, c)(x)


def physnet_2p1d_twin(
    frames: int = 32,
    img_size: int = 16,
    width: int = 8,
    in_channels: int = 3,
    batch: int | None = None,
) -> Any:
    """``physnet_2p1d(frames, img_size, width, in_channels, mid="cout")`` in tf_keras.

    ``batch``: None for training; 1 for the model that is exported (same weights).
    """
    layers = keras.layers
    fold = _Fold(batch)
    c1, c2, c3 = width, 2 * width, 4 * width
    t, s = frames, img_size
    inp = layers.Input((frames * img_size, img_size, in_channels), batch_size=batch)
    x = fold.frames(t, s, s, in_channels)(inp)
    x = layers.MaxPooling2D(2)(_conv_bn_relu(x, c1, 5))
    s //= 2
    x = _block(_block(x, c2, t, (s, s), fold), c3, t, (s, s), fold)
    x = _pool_spatem(x, t, (s, s), c3, fold)
    t, s = t // 2, s // 2
    x = _block(_block(x, c3, t, (s, s), fold), c3, t, (s, s), fold)
    x = _pool_spatem(x, t, (s, s), c3, fold)
    t, s = t // 2, s // 2
    x = layers.MaxPooling2D(2)(_block(_block(x, c3, t, (s, s), fold), c3, t, (s, s), fold))
    s //= 2
    x = _block(_block(x, c3, t, (s, s), fold), c3, t, (s, s), fold)
    x = fold.time(t, s * s, c3)(x)
    for _ in range(2):
        x = layers.Conv2DTranspose(c3, (4, 1), strides=(2, 1), padding="same")(x)
        x = layers.ELU()(layers.BatchNormalization()(x))
    x = layers.AveragePooling2D((1, s * s))(x)  # mean over the pixels: (B, T, 1, c3)
    x = layers.Conv2D(1, 1)(x)
    out = layers.Reshape((frames,))(x)
    return keras.Model(inp, out, name="physnet_2p1d_twin")


def neg_pearson(y_true: Any, y_pred: Any) -> Any:
    """1 - Pearson correlation per clip (the loss tinyprune trains rPPG nets with)."""
    import tensorflow as tf

    yt = y_true - tf.reduce_mean(y_true, axis=1, keepdims=True)
    yp = y_pred - tf.reduce_mean(y_pred, axis=1, keepdims=True)
    num = tf.reduce_sum(yt * yp, axis=1)
    den = tf.norm(yt, axis=1) * tf.norm(yp, axis=1) + 1e-8
    return 1.0 - num / den


def prune_supported(model: Any, tfmot: Any, sparsity_schedule: Any) -> Any:
    """``prune_low_magnitude`` on the layers with kernels (TF-MOT's per-layer route)."""

    def wrap(layer: Any) -> Any:
        if type(layer).__name__ in ("Conv2D", "Conv2DTranspose", "Dense"):
            return tfmot.sparsity.keras.prune_low_magnitude(
                layer, pruning_schedule=sparsity_schedule
            )
        return layer

    return keras.models.clone_model(model, clone_function=wrap)


def _no_op_config(tfmot: Any) -> Any:
    """A ``QuantizeConfig`` that adds no fake-quant (TF-MOT's documented pass-through)."""

    class NoOpQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        def get_weights_and_quantizers(self, layer: Any) -> list[Any]:
            return []

        def get_activations_and_quantizers(self, layer: Any) -> list[Any]:
            return []

        def set_quantize_weights(self, layer: Any, quantize_weights: Any) -> None:
            pass

        def set_quantize_activations(self, layer: Any, quantize_activations: Any) -> None:
            pass

        def get_output_quantizers(self, layer: Any) -> list[Any]:
            return []

        def get_config(self) -> dict[str, Any]:
            return {}

    return NoOpQuantizeConfig


def _scheme_supports(layer: Any) -> bool:
    """In TF-MOT's PQAT registry; BatchNormalization only where it folds into a Conv2D."""
    name = type(layer).__name__
    if name == "BatchNormalization":
        inbound = layer._inbound_nodes[0].inbound_layers  # noqa: SLF001 (Keras has no API)
        return type(inbound).__name__ == "Conv2D"
    return name in SUPPORTED


def quantize_supported(model: Any, tfmot: Any) -> Any:
    """Prune-preserving QAT: TF-MOT's 8-bit scheme on the layers it supports.

    The others (``FoldFrames``, ``ELU``) get a pass-through ``QuantizeConfig``, the way TF-MOT's
    guide quantizes a model with layers it does not know; the int8 converter quantizes them.
    """
    qk = tfmot.quantization.keras
    no_op = _no_op_config(tfmot)

    def wrap(layer: Any) -> Any:
        if _scheme_supports(layer):
            return qk.quantize_annotate_layer(layer)
        if isinstance(layer, keras.layers.InputLayer):
            return layer
        return qk.quantize_annotate_layer(layer, quantize_config=no_op())

    annotated = keras.models.clone_model(model, clone_function=wrap)
    scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    with qk.quantize_scope({"NoOpQuantizeConfig": no_op, "FoldFrames": FoldFrames}):
        return qk.quantize_apply(annotated, scheme)
