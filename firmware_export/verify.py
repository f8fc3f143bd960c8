"""Cross-runtime comparisons with explicit tolerances.

An int8 model is only worth flashing if it computes what the float model computes, and
if the microcontroller runtime computes what the desktop runtime computes. This module
holds the comparisons, on every model output: float vs float (PyTorch vs ONNX Runtime),
float vs int8 (dequantized, with figures on the input-dependent part from
:mod:`firmware_export.fidelity`), and TFLM vs LiteRT's reference kernels, expected to agree
bit for bit (both use the same reference integer arithmetic). When they do not, it names the
first op whose output differs, so the user knows where to look. Which comparison gates which
target is decided in :mod:`firmware_export.verification`.

Figures follow ST Edge AI's ``validate`` report: max abs error, rmse, mae, l2r (relative
L2 error), cosine similarity, and top-1 agreement / accuracy for class vectors.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict

import numpy as np

from firmware_export.analyze import time_limit
from firmware_export.isolate import run_isolated
from firmware_export.tflite_model import parse_tflite
from firmware_export.tflm import prepare_samples
from tinyprune.errors import ConfigError, MissingKernelError

logger = logging.getLogger(__name__)

_RESOLVERS = ("ref", "xnnpack", "builtin")

KNOWN_FC_DIFFERENCE = (
    "LiteRT's reference FULLY_CONNECTED requantizes in float, TFLM in integers: up to 1 LSB "
    "apart; TFLM's result is what the device computes"
)


@dataclass(frozen=True)
class Comparison:
    """One comparison of a candidate against a reference output, with its tolerances.

    Attributes:
        name: What was compared, e.g. ``"tflm_vs_litert_ref"``.
        samples: Number of samples compared.
        units: Units of the error figures (``"output units"`` or ``"LSB"``).
        max_abs, mae, rmse: Absolute error figures in ``units``.
        cos: Cosine similarity of the flattened outputs (1.0 = same direction).
        l2r: ``||ref - cand||_2 / ||ref||_2`` (relative L2 error).
        tolerance: Named limits; keys ending ``_max`` are upper bounds of the figure before
            the suffix, keys ending ``_min`` lower bounds (``{"max_abs_max": 0.0}``).
        passed: Whether every limit holds.
        top1_agreement: Share of samples with the same argmax (class vectors only).
        accuracy_reference, accuracy_candidate: Top-1 accuracy against labels, if given.
        first_divergent_op: For runtime parity, the first op whose output differs.
        known_difference: Why a difference is accepted (a known kernel variant).
        centred_cos, sqnr_db, centred_sqnr_db, variation_lsb, centred_gated: Fidelity on the
            input-dependent part (int8 vs float only; see :mod:`firmware_export.fidelity`).
        outputs: Per model output (``index``, ``label``, figures) when the comparison covers
            several outputs; the figures above are then the worst over them.
    """

    name: str
    samples: int
    units: str
    max_abs: float
    mae: float
    rmse: float
    cos: float
    l2r: float
    tolerance: dict[str, float] = field(default_factory=dict)
    passed: bool = True
    top1_agreement: float | None = None
    accuracy_reference: float | None = None
    accuracy_candidate: float | None = None
    first_divergent_op: str | None = None
    known_difference: str | None = None
    centred_cos: float | None = None
    sqnr_db: float | None = None
    centred_sqnr_db: float | None = None
    variation_lsb: float | None = None
    centred_gated: bool | None = None
    outputs: tuple[dict[str, Any], ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; non-finite numbers become ``None``."""
        return {k: _json_number(v) for k, v in asdict(self).items()}


def _json_number(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_number(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_number(x) for x in v]
    return v


class ErrorFigures(TypedDict):
    """The absolute error figures of a :class:`Comparison` (its fields of the same names)."""

    max_abs: float
    mae: float
    rmse: float
    cos: float
    l2r: float


def _figures(reference: np.ndarray, candidate: np.ndarray, name: str) -> ErrorFigures:
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        msg = f"{name}: reference has shape {ref.shape}, candidate {cand.shape}; they must match"
        raise ConfigError(msg)
    if ref.size == 0:
        msg = f"{name}: nothing to compare (empty outputs)"
        raise ConfigError(msg)
    diff = (cand - ref).ravel()
    r, c = ref.ravel(), cand.ravel()
    nr, nc, nd = np.linalg.norm(r), np.linalg.norm(c), np.linalg.norm(diff)
    if nd == 0:
        cos = 1.0
    elif nr == 0 or nc == 0:
        cos = 0.0
    else:
        cos = float(np.clip(r @ c / (nr * nc), -1.0, 1.0))
    return {
        "max_abs": float(np.max(np.abs(diff))),
        "mae": float(np.mean(np.abs(diff))),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "cos": cos,
        "l2r": float(nd / nr) if nr > 0 else (0.0 if nd == 0 else math.inf),
    }


def _top1(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    if reference.ndim != 2 or reference.shape[1] < 2:
        return None
    return float(np.mean(np.argmax(reference, 1) == np.argmax(candidate, 1)))


def _accuracy(out: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None or out.ndim != 2 or out.shape[1] < 2:
        return None
    return float(np.mean(np.argmax(out, 1) == np.asarray(labels).ravel()))


def compare_float(
    reference: np.ndarray, candidate: np.ndarray, name: str, tol_max_abs: float
) -> Comparison:
    """Compare two float outputs (e.g. PyTorch vs ONNX Runtime); pass if max abs <= tol.

    Raises:
        ConfigError: Shapes differ or the outputs are empty.
    """
    ref, cand = np.asarray(reference), np.asarray(candidate)
    f = _figures(ref, cand, name)
    return Comparison(
        name,
        int(ref.shape[0]) if ref.ndim else 1,
        "output units",
        **f,
        tolerance={"max_abs_max": float(tol_max_abs)},
        passed=f["max_abs"] <= tol_max_abs,
        top1_agreement=_top1(ref, cand),
    )


@dataclass(frozen=True)
class QuantLimits:
    """What an int8-vs-float comparison accepts.

    Attributes:
        min_cos: Lowest acceptable cosine similarity (int8 rounding keeps it near 1).
        min_top1: Lowest acceptable top-1 agreement, checked for class vectors only.
        max_abs: Highest acceptable max abs error in output units, if given.
        min_centred_cos: Lowest acceptable centred cosine, where it is gated.
    """

    min_cos: float = 0.99
    min_top1: float | None = None
    max_abs: float | None = None
    min_centred_cos: float | None = None


def compare_quantized(
    float_out: np.ndarray,
    int8_out_dequantized: np.ndarray,
    name: str,
    limits: QuantLimits | None = None,
    *,
    labels: np.ndarray | None = None,
    output_scale: float | None = None,
) -> Comparison:
    """Compare the float model's outputs with the dequantized int8 model's outputs.

    Besides the plain figures it measures fidelity on the input-dependent part (centred
    cosine and SQNR, :func:`firmware_export.fidelity.centred_figures`); with
    ``limits.min_centred_cos`` the centred cosine is gated where the output varies across
    samples.

    Args:
        float_out: Float reference outputs, samples on axis 0.
        int8_out_dequantized: The int8 model's outputs mapped back with :func:`dequantize`.
        name: Name of the comparison.
        limits: What passes (default :class:`QuantLimits`: cosine >= 0.99).
        labels: Class labels; adds top-1 accuracy of both models (ST Edge AI's ``acc``).
        output_scale: Quantization scale of the int8 output (for ``variation_lsb``).

    Raises:
        ConfigError: Shapes differ or the outputs are empty.
    """
    lim = limits or QuantLimits()
    min_cos, min_top1, max_abs = lim.min_cos, lim.min_top1, lim.max_abs
    min_centred_cos = lim.min_centred_cos
    from firmware_export.fidelity import centred_figures

    ref, cand = np.asarray(float_out), np.asarray(int8_out_dequantized)
    f = _figures(ref, cand, name)
    centred = centred_figures(ref, cand, output_scale)
    top1 = _top1(ref, cand)
    tol: dict[str, float] = {"cos_min": float(min_cos)}
    ok = f["cos"] >= min_cos
    if min_top1 is not None and top1 is not None:
        tol["top1_agreement_min"] = float(min_top1)
        ok = ok and top1 >= min_top1
    if max_abs is not None:
        tol["max_abs_max"] = float(max_abs)
        ok = ok and f["max_abs"] <= max_abs
    if min_centred_cos is not None:
        tol["centred_cos_min"] = float(min_centred_cos)
        if centred["centred_gated"]:
            ok = ok and centred["centred_cos"] >= min_centred_cos
    return Comparison(
        name,
        int(ref.shape[0]) if ref.ndim else 1,
        "output units",
        **f,
        tolerance=tol,
        passed=bool(ok),
        top1_agreement=top1,
        accuracy_reference=_accuracy(ref, labels),
        accuracy_candidate=_accuracy(cand, labels),
        **centred,
    )


def quantize_input(
    x: np.ndarray, scale: float, zero_point: int, dtype: Any = np.int8
) -> np.ndarray:
    """Quantize float data: ``clip(round(x / scale) + zero_point)`` in ``dtype``'s range."""
    if not scale > 0:
        msg = f"quantization scale must be > 0, got {scale}"
        raise ConfigError(msg)
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, dtype=np.float64) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Map quantized values back to real numbers: ``(q - zero_point) * scale`` (float32)."""
    return ((np.asarray(q, dtype=np.float64) - zero_point) * scale).astype(np.float32)


def run_litert(
    model_bytes: bytes,
    inputs: Sequence[np.ndarray] | np.ndarray,
    resolver: str = "ref",
    timeout: float = 300,
) -> np.ndarray:
    """Output 0 of :func:`run_litert_outputs` (stacked over the samples)."""
    return run_litert_outputs(model_bytes, inputs, resolver, timeout)[0]


def run_litert_outputs(
    model_bytes: bytes,
    inputs: Sequence[np.ndarray] | np.ndarray,
    resolver: str = "ref",
    timeout: float = 300,
) -> list[np.ndarray]:
    """Run samples through LiteRT (in a child process); every output, stacked over samples.

    Args:
        model_bytes: The ``.tflite`` flatbuffer.
        inputs: Batch for input 0 in its dtype, as for :func:`firmware_export.tflm.run_tflm`.
        resolver: ``"ref"`` (reference kernels, bit-exact with TFLM), ``"builtin"`` (optimized
            kernels, no delegate; has ops the reference resolver lacks, e.g. ELU) or ``"xnnpack"``
            (LiteRT's default, what a Raspberry Pi runs).
        timeout: Seconds before the child is killed.

    Returns:
        One array per model output (subgraph order), ``(N, *shape[1:])`` in the output dtype.

    Raises:
        ConfigError: Unknown resolver, wrong input dtype or shape.
        MissingKernelError: The resolver has no kernel for an op of the model.
        ExportError: LiteRT failed or crashed.
    """
    if resolver not in _RESOLVERS:
        msg = f"unknown LiteRT resolver {resolver!r}; expected one of {_RESOLVERS}"
        raise ConfigError(msg)
    samples = prepare_samples(model_bytes, inputs)
    return run_isolated(
        _litert_child,
        bytes(model_bytes),
        samples,
        resolver,
        timeout=time_limit(model_bytes, len(samples), timeout),
        stage="litert",
    )


# --- functions that run in the child process ------------------------------------------------

#: How LiteRT names an op its resolver lacks (the one place its message text is read).
_MISSING_KERNEL = re.compile(r"Didn't find op for (?:builtin|custom) opcode '([^']+)'")


def _litert_interpreter(model_bytes: bytes, resolver: str, preserve: bool = False) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = {
        "ref": OpResolverType.BUILTIN_REF,
        "xnnpack": OpResolverType.AUTO,
        "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    }[resolver]
    try:
        interp = Interpreter(
            model_content=model_bytes,
            num_threads=1,
            experimental_op_resolver_type=kind,
            experimental_preserve_all_tensors=preserve,
        )
        interp.allocate_tensors()
    except (RuntimeError, ValueError) as e:
        ops = tuple(dict.fromkeys(_MISSING_KERNEL.findall(str(e))))
        if not ops:
            raise
        msg = (
            f"LiteRT's {resolver!r} op resolver has no kernel for {', '.join(ops)} "
            f"(LiteRT: {str(e).strip().splitlines()[0]})"
        )
        raise MissingKernelError(msg, ops=ops, resolver=resolver) from None
    return interp


def _litert_child(model_bytes: bytes, samples: np.ndarray, resolver: str) -> list[np.ndarray]:
    interp = _litert_interpreter(model_bytes, resolver)
    inp = interp.get_input_details()[0]["index"]
    outs = [d["index"] for d in interp.get_output_details()]
    runs = []
    for x in samples:
        interp.set_tensor(inp, x)
        interp.invoke()
        runs.append([np.array(interp.get_tensor(o), copy=True) for o in outs])
    return [np.concatenate([r[k] for r in runs], axis=0) for k in range(len(outs))]


def _litert_tensors_child(
    model_bytes: bytes, sample: np.ndarray, resolver: str = "ref"
) -> dict[int, np.ndarray]:
    interp = _litert_interpreter(model_bytes, resolver, preserve=True)
    interp.set_tensor(interp.get_input_details()[0]["index"], sample)
    interp.invoke()
    values: dict[int, np.ndarray] = {}
    for op in parse_tflite(model_bytes).ops:
        for t in op.outputs:
            if t >= 0:
                try:
                    values[t] = np.array(interp.get_tensor(t), copy=True)
                except ValueError:  # a tensor LiteRT folded away has no data
                    continue
    return values


__all__ = [
    "Comparison",
    "compare_float",
    "compare_quantized",
    "dequantize",
    "quantize_input",
    "run_litert",
    "run_litert_outputs",
]
