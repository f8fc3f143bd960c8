"""Shared fixtures: tiny int8 models built directly with TensorFlow (not with the pipeline)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


def keras_int8_cnn() -> bytes:
    """Conv2D+ReLU, MaxPool, Conv2D+ReLU, Dense: full int8 with random calibration data."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    layers = tf.keras.layers
    model = tf.keras.Sequential(
        [
            tf.keras.Input((12, 12, 2)),
            layers.Conv2D(8, 3, activation="relu", name="conv1"),
            layers.MaxPool2D(2, name="pool"),
            layers.Conv2D(8, 3, activation="relu", name="conv2"),
            layers.Flatten(name="flat"),
            layers.Dense(4, name="fc"),
        ]
    )
    return _full_int8(model, (1, 12, 12, 2), samples=16, seed=0)


def _full_int8(model: object, shape: tuple[int, ...], samples: int, seed: int) -> bytes:
    """Full-int8 conversion with random-normal calibration data."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    def representative():  # noqa: ANN202
        for _ in range(samples):
            yield [rng.standard_normal(shape).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def keras_int8_wide_elu() -> bytes:
    """Conv2D -> ELU three times on 32x32x4: LiteRT's reference resolver has no ELU, and the
    intermediates (ELU runs in float: about 2 MiB) do not fit TFLM's default host arena all
    at once, while a normal run does."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(1)
    layers = tf.keras.layers
    model = tf.keras.Sequential(
        [tf.keras.Input((32, 32, 4))]
        + [layers.Conv2D(64, 3, padding="same", activation="elu") for _ in range(3)]
        + [layers.GlobalAveragePooling2D(), layers.Dense(4)]
    )
    return _full_int8(model, (1, 32, 32, 4), samples=8, seed=1)


def cached_model(
    factory: Callable[[], bytes], tmp_path_factory: pytest.TempPathFactory, name: str
) -> bytes:
    """Build once per session and keep the bytes in the session's temp folder."""
    path: Path = tmp_path_factory.getbasetemp() / "tinyprune_tflite_models" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(factory())
        tmp.replace(path)
    return path.read_bytes()


@pytest.fixture(scope="session")
def int8_model(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The shared int8 CNN (12x12x2 input, 4 outputs)."""
    pytest.importorskip("tflite_micro")
    pytest.importorskip("ai_edge_litert")
    return cached_model(keras_int8_cnn, tmp_path_factory, "cnn_int8.tflite")


@pytest.fixture(scope="session")
def wide_elu_model(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The ELU model (32x32x4 input, 4 outputs)."""
    pytest.importorskip("tflite_micro")
    pytest.importorskip("ai_edge_litert")
    return cached_model(keras_int8_wide_elu, tmp_path_factory, "wide_elu32_int8.tflite")
