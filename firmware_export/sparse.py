"""Sparse int8 TFLite for LiteRT: store pruned weights compressed, verify they compute the same.

Unstructured pruning leaves most weights at exactly zero, but ``model_int8.tflite`` still stores
them densely, so the file does not shrink. TFLiteConverter's ``EXPERIMENTAL_SPARSITY``
optimization stores such weights in TFLite's sparse format (dense outer dimensions, CSR-like
innermost dimension) and inserts a ``DENSIFY`` op in front of each layer that uses one.

What was seen here (ai-edge-litert 2.3.0, TensorFlow 2.21): LiteRT's builtin kernels, reference
and optimized, run the sparse model and give bit-identical int8 outputs to the dense one, but the
default XNNPACK delegate refuses it ("failed to delegate FULLY_CONNECTED"), so on a Raspberry Pi
it must be loaded with ``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``. TFLite Micro has no
``DENSIFY`` kernel: the sparse file is for LiteRT targets only. ``DENSIFY`` expands the weights
once when the interpreter prepares the model, so the dense weights then sit in RAM and inference
runs the dense kernels: the file (download, SD card, flash) shrinks, memory and latency do not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from firmware_export.quantize import quantize_int8
from firmware_export.verify import quantize_input, run_litert, run_litert_outputs
from tinyprune.errors import ConfigError, ExportError, VerificationError

logger = logging.getLogger(__name__)

#: Samples compared between the dense and the sparse model by default.
DEFAULT_VERIFY_SAMPLES = 8


@dataclass(frozen=True)
class SparseResult:
    """The sparse flatbuffer and what was checked about it.

    Attributes:
        model_bytes: The sparse ``.tflite`` flatbuffer.
        dense_bytes: Size of the dense int8 model it replaces.
        sparse_tensors: Weight tensors stored in the sparse format.
        densify_ops: ``DENSIFY`` ops the converter inserted.
        samples: Inputs run through both models (LiteRT builtin kernels, no delegate).
        max_abs_diff: Largest int8 output difference found (0 when identical).
        xnnpack_runs: Whether LiteRT's default XNNPACK delegate accepts the model (None: not
            checked).
    """

    model_bytes: bytes
    dense_bytes: int
    sparse_tensors: int
    densify_ops: int
    samples: int
    max_abs_diff: int
    xnnpack_runs: bool | None

    @property
    def sparse_bytes(self) -> int:
        """Size of the sparse flatbuffer."""
        return len(self.model_bytes)

    @property
    def identical(self) -> bool:
        """True when the sparse model's outputs equal the dense model's on every sample."""
        return self.max_abs_diff == 0

    @property
    def ratio(self) -> float:
        """Sparse size / dense size."""
        return self.sparse_bytes / self.dense_bytes if self.dense_bytes else 1.0

    def to_report(self, file_name: str = "model_int8_sparse.tflite") -> dict[str, Any]:
        """JSON-ready ``report["sparse"]`` section."""
        return {
            "file": file_name,
            "bytes": self.sparse_bytes,
            "dense_bytes": self.dense_bytes,
            "saved_bytes": self.dense_bytes - self.sparse_bytes,
            "ratio": round(self.ratio, 4),
            "sparse_tensors": self.sparse_tensors,
            "densify_ops": self.densify_ops,
            "verify": {
                "resolver": "builtin",
                "samples": self.samples,
                "max_abs_diff_lsb": self.max_abs_diff,
                "identical": self.identical,
            },
            "runtimes": {
                "litert_builtin": True,
                "litert_xnnpack": self.xnnpack_runs,
                "tflm": False,
            },
            "note": (
                "load with OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES on LiteRT; "
                "TFLM has no DENSIFY op; weights are densified in RAM at load, so memory "
                "and latency are those of the dense model"
            ),
        }


def count_sparse(model_bytes: bytes) -> tuple[int, int]:
    """(weight tensors stored sparse, DENSIFY ops) of a flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    from firmware_export.tflite_model import parse_tflite

    parsed = parse_tflite(model_bytes)  # checks the identifier, raises ConfigError if wrong
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    tensors = model.subgraphs[0].tensors or []
    n_sparse = sum(1 for t in tensors if t.sparsity is not None)
    return n_sparse, sum(1 for op in parsed.ops if op.name == "DENSIFY")


def int8_inputs(dense_bytes: bytes, calib_channels_last: np.ndarray, n: int) -> np.ndarray:
    """Quantize the first ``n`` calibration samples with the dense model's input parameters."""
    from firmware_export.tflite_model import parse_tflite

    parsed = parse_tflite(dense_bytes)
    inp = parsed.tensors[parsed.inputs[0]]
    if inp.dtype != "INT8" or not inp.scale:
        msg = f"the dense model's input is {inp.dtype}, expected a full-int8 model (INT8 input)"
        raise ConfigError(msg)
    return quantize_input(calib_channels_last[:n], inp.scale[0], inp.zero_point[0])


def sparse_tflite(
    saved_model_dir: str | Path,
    calib_channels_last: np.ndarray,
    dense_bytes: bytes,
    *,
    inputs: np.ndarray | None = None,
    verify_samples: int = DEFAULT_VERIFY_SAMPLES,
    per_channel: bool = True,
    check_xnnpack: bool = True,
) -> SparseResult | None:
    """Convert with EXPERIMENTAL_SPARSITY; keep the result if smaller and output-identical.

    Args:
        saved_model_dir: The float SavedModel the dense int8 model was converted from
            (``out/saved_model`` of an export).
        calib_channels_last: The same calibration samples (channels-last, float32) that made
            the dense model, so both get the same quantization parameters.
        dense_bytes: The dense ``model_int8.tflite`` flatbuffer.
        inputs: int8 inputs (channels-last, batch axis included) to compare the two models on;
            default: the first ``verify_samples`` calibration samples, quantized.
        verify_samples: Samples used when ``inputs`` is None.
        per_channel: As for :func:`firmware_export.quantize.quantize_int8`.
        check_xnnpack: Also try LiteRT's default XNNPACK delegate (one more child process).

    Returns:
        The :class:`SparseResult`, or None when the sparse file is not smaller than the dense
        one (nothing worth storing sparse).

    Raises:
        ConfigError: empty calibration data or a dense model that is not full int8.
        ExportError: conversion or LiteRT failed.
        VerificationError: LiteRT's outputs of the sparse and dense models differ.
    """
    calib = np.asarray(calib_channels_last, dtype=np.float32)
    if calib.ndim < 2 or len(calib) == 0:
        msg = f"calibration data must be (N, ...) with N >= 1, got shape {calib.shape}"
        raise ConfigError(msg)
    sparse = quantize_int8(Path(saved_model_dir), calib, per_channel=per_channel, sparse=True)
    n_sparse, n_densify = count_sparse(sparse)
    if len(sparse) >= len(dense_bytes) or n_sparse == 0:
        logger.info(
            "sparse TFLite not kept: %d bytes vs %d dense, %d sparse tensors",
            len(sparse),
            len(dense_bytes),
            n_sparse,
        )
        return None
    x = inputs if inputs is not None else int8_inputs(dense_bytes, calib, verify_samples)
    # builtin kernels without XNNPACK: how a Raspberry Pi loads the sparse model (and the
    # reference resolver lacks some kernels, e.g. ELU)
    diff = _max_diff(_all_outputs(dense_bytes, x), _all_outputs(sparse, x))
    if diff != 0:
        msg = (
            f"the sparse TFLite model's LiteRT outputs differ from the dense model's by up to "
            f"{diff} LSB on {len(x)} int8 inputs (expected identical); ship the dense "
            "model_int8.tflite only"
        )
        raise VerificationError(msg, stage="sparse")
    xnnpack = _runs_on_xnnpack(sparse, x[:1]) if check_xnnpack else None
    return SparseResult(sparse, len(dense_bytes), n_sparse, n_densify, len(x), diff, xnnpack)


def _all_outputs(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Every output of the model, flattened per sample and side by side."""
    outs = run_litert_outputs(model_bytes, x, "builtin")
    return np.concatenate([o.reshape(len(o), -1) for o in outs], axis=1)


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    if a.shape != b.shape:
        msg = f"dense and sparse outputs have different shapes {a.shape} vs {b.shape}"
        raise VerificationError(msg, stage="sparse")
    return int(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64)))) if a.size else 0


def _runs_on_xnnpack(model_bytes: bytes, x: np.ndarray) -> bool:
    try:
        run_litert(model_bytes, x, "xnnpack")
    except ExportError as e:
        logger.info("sparse model does not run under XNNPACK: %s", str(e).splitlines()[0])
        return False
    return True


__all__ = [
    "SparseResult",
    "count_sparse",
    "int8_inputs",
    "sparse_tflite",
]
