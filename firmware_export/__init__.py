"""firmware_export: PyTorch -> ONNX -> TensorFlow -> full-int8 TFLite -> verified on ONNX
Runtime, LiteRT and TFLite Micro -> C arrays -> budget checks -> reports.

Heavy libraries (TensorFlow, onnx2tf, the runtimes) are imported inside the stages, so
importing this package stays cheap.
"""

from firmware_export.pipeline import ExportOptions, ExportResult, export
from firmware_export.recheck import report_existing

__all__ = ["ExportOptions", "ExportResult", "export", "report_existing"]
