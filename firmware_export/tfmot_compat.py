"""Import TensorFlow Model Optimization (TF-MOT) without its process-wide Keras switch.

``import tensorflow_model_optimization`` sets ``os.environ["TF_USE_LEGACY_KERAS"] = "1"``
(``tfmot/python/core/keras/compat.py``) and, as it touches ``tf.keras`` right after, would make
``tf.keras`` resolve to ``tf_keras`` for the rest of the process and for every child process.
TF-MOT itself works on ``tf_keras`` either way (it imports ``tf_keras`` when ``tf.keras`` is
Keras 3). :func:`import_tfmot` resolves ``tf.keras`` first, imports TF-MOT, then puts the
variable back as it was.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

from tinyprune.errors import ConfigError

ENV = "TF_USE_LEGACY_KERAS"


def import_tfmot() -> ModuleType:
    """Return ``tensorflow_model_optimization``, leaving ``TF_USE_LEGACY_KERAS`` untouched.

    Raises:
        ConfigError: TF-MOT is not installed (it comes with the ``export`` extra).
    """
    import tensorflow as tf

    before = os.environ.get(ENV)
    _ = tf.keras.__name__  # resolve the lazy tf.keras with the caller's setting, not TF-MOT's
    try:
        tfmot = importlib.import_module("tensorflow_model_optimization")
    except ImportError as e:
        msg = (
            "this model needs TensorFlow Model Optimization: "
            "pip install 'tinyprune[export]' (tensorflow-model-optimization==0.8.1)"
        )
        raise ConfigError(msg) from e
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before
    return tfmot


def quantize_scope() -> Any:
    """TF-MOT's ``quantize_scope()``: QAT and PQAT layers and quantize configs by name."""
    return import_tfmot().quantization.keras.quantize_scope()


__all__ = ["import_tfmot", "quantize_scope"]
