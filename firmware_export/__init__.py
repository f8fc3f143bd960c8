"""firmware_export: PyTorch -> ONNX -> TensorFlow -> full-int8 TFLite -> verified on ONNX
Runtime, LiteRT and TFLite Micro -> C arrays -> budget checks -> reports.

Heavy libraries (torch, TensorFlow, onnx2tf, the runtimes) are imported on first use, so
importing this package (as the runtime child processes do) stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ExportOptions", "ExportResult", "export", "report_existing"]


def __getattr__(name: str) -> Any:
    if name == "ExportOptions":
        from firmware_export.options import ExportOptions

        return ExportOptions
    if name in ("ExportResult", "export"):
        from firmware_export import pipeline

        return getattr(pipeline, name)
    if name == "report_existing":
        from firmware_export.recheck import report_existing

        return report_existing
    msg = f"module 'firmware_export' has no attribute {name!r}"
    raise AttributeError(msg)
