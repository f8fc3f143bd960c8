"""What the export pipeline takes: a PyTorch module, an ONNX file or a Keras model.

The MODEL strings of the CLI (``zoo:NAME``, ``file.py:factory``, ``.pt2``) are resolved by
``tinyprune.app.sources.load_model`` into a :class:`LoadedModel`; this package never parses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for export: a torch module, or the path of an ONNX file."""

    name: str  # used for C identifiers and report titles
    source: str  # the MODEL argument as given
    module: nn.Module | None = None
    onnx_path: Path | None = None
    input_shape: tuple[int, ...] | None = None  # per-sample PyTorch layout, when the model knows it
    keras_path: Path | None = None  # a Keras model / SavedModel (export only)
