"""``tinyprune export`` / ``tinyprune report``: resolve MODEL, then run ``firmware_export``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def export_model(
    source: str,
    calibration: Any,
    target: str | Path,
    out_dir: str | Path,
    options: Any = None,
    on_stage: Any = None,
) -> Any:
    """Export MODEL (``zoo:NAME``, ``file.py:factory``, ``.pt2``, ``.onnx``, Keras) to int8.

    The MODEL string is resolved here (``tinyprune.app.sources``); ``firmware_export.export``
    only ever sees a module, an ONNX file or a Keras model. Returns its ``ExportResult``.
    """
    from firmware_export.keras_source import is_keras_source
    from firmware_export.pipeline import export

    model: Any = source
    if not (source.endswith(".onnx") or is_keras_source(source)):
        from tinyprune.app.sources import load_model

        model = load_model(source)
    return export(
        model, calibration, target=target, out_dir=out_dir, options=options, on_stage=on_stage
    )
