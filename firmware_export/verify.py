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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from firmware_export.isolate import run_isolated
from firmware_export.tflite_model import parse_tflite
from firmware_export.tflm import as_batch_of_one, prepare_samples, tflm_tensors
from tinyprune.errors import ConfigError, VerificationError

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


def _figures(reference: np.ndarray, candidate: np.ndarray, name: str) -> dict[str, float]:
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


def compare_quantized(
    float_out: np.ndarray,
    int8_out_dequantized: np.ndarray,
    name: str,
    *,
    min_cos: float = 0.99,
    min_top1: float | None = None,
    max_abs: float | None = None,
    labels: np.ndarray | None = None,
    output_scale: float | None = None,
    min_centred_cos: float | None = None,
) -> Comparison:
    """Compare the float model's outputs with the dequantized int8 model's outputs.

    Besides the plain figures it measures fidelity on the input-dependent part (centred
    cosine and SQNR, :func:`firmware_export.fidelity.centred_figures`); with
    ``min_centred_cos`` the centred cosine is gated where the output varies across samples.

    Args:
        float_out: Float reference outputs, samples on axis 0.
        int8_out_dequantized: The int8 model's outputs mapped back with :func:`dequantize`.
        name: Name of the comparison.
        min_cos: Lowest acceptable cosine similarity (int8 rounding keeps it near 1).
        min_top1: Lowest acceptable top-1 agreement, checked for class vectors only.
        max_abs: Highest acceptable max abs error in output units, if given.
        labels: Class labels; adds top-1 accuracy of both models (ST Edge AI's ``acc``).
        output_scale: Quantization scale of the int8 output (for ``variation_lsb``).
        min_centred_cos: Lowest acceptable centred cosine, where it is gated.

    Raises:
        ConfigError: Shapes differ or the outputs are empty.
    """
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
        ExportError: LiteRT failed or crashed.
    """
    if resolver not in _RESOLVERS:
        msg = f"unknown LiteRT resolver {resolver!r}; expected one of {_RESOLVERS}"
        raise ConfigError(msg)
    samples = prepare_samples(model_bytes, inputs)
    return run_isolated(  # type: ignore[no-any-return]
        _litert_child, bytes(model_bytes), samples, resolver, timeout=timeout, stage="litert"
    )


def first_divergent_op(
    model_bytes: bytes,
    sample: np.ndarray,
    *,
    candidate_model: bytes | None = None,
    tolerance_lsb: int = 0,
    reference: str = "ref",
) -> str | None:
    """Find the first op (execution order) whose output differs between LiteRT REF and TFLM.

    Both runtimes keep every intermediate tensor: LiteRT with
    ``experimental_preserve_all_tensors`` and the reference resolver, TFLM with its
    ``kPreserveAllTensors`` config, whose ``GetTensor`` reads any tensor after ``invoke``.
    Tensor indices are the flatbuffer's in both runtimes, so outputs pair up by index.

    Args:
        model_bytes: The model LiteRT runs (and TFLM too, unless ``candidate_model``).
        sample: One input sample in the input dtype (with or without the batch axis).
        candidate_model: A model with the same graph for TFLM to run instead, e.g. an edited
            or re-converted copy; its tensor indices must match ``model_bytes``.
        tolerance_lsb: Largest per-element difference still counted as equal.
        reference: LiteRT resolver (``"ref"``; ``"builtin"`` when the reference resolver
            lacks an op of the model, e.g. ELU).

    Returns:
        E.g. ``"op 3 CONV_2D (output 'conv1/Relu')"``, or None if every op output agrees.

    Raises:
        ConfigError: ``candidate_model`` has other ops, or the sample does not fit input 0.
        ExportError: A runtime failed or crashed.
    """
    model = parse_tflite(model_bytes)
    if candidate_model is not None:
        other = [op.name for op in parse_tflite(candidate_model).ops]
        if other != [op.name for op in model.ops]:
            msg = (
                f"candidate_model must have the same graph as the model (ops "
                f"{[op.name for op in model.ops]}), got ops {other}"
            )
            raise ConfigError(msg)
    batch = as_batch_of_one(model_bytes, sample)
    ref = run_isolated(
        _litert_tensors_child,
        bytes(model_bytes),
        prepare_samples(model_bytes, batch)[0],
        reference,
        stage="verify",
    )
    cand = tflm_tensors(candidate_model if candidate_model is not None else model_bytes, batch)
    for op in model.ops:
        for t in op.outputs:
            if t < 0 or t not in ref or t not in cand:
                continue
            a, b = ref[t], cand[t]
            if a.shape != b.shape or np.any(
                np.abs(a.astype(np.float64) - b.astype(np.float64)) > tolerance_lsb
            ):
                return f"op {op.index} {op.name} (output '{model.tensors[t].name}')"
    return None


@dataclass(frozen=True)
class ParityRun:
    """TFLM vs a LiteRT resolver: the comparison plus the raw outputs of both runtimes.

    Attributes:
        comparison: Merged over the outputs (see :func:`firmware_export.fidelity.merge_outputs`).
        reference: LiteRT's outputs (one array per output, output dtype).
        tflm: TFLM's outputs.
        message: Why the runtimes disagree beyond the tolerance (None when they do not).
    """

    comparison: Comparison
    reference: list[np.ndarray]
    tflm: list[np.ndarray]
    message: str | None = None


def runtime_parity(
    model_bytes: bytes,
    int8_inputs: Sequence[np.ndarray] | np.ndarray,
    tolerance_lsb: int = 0,
    *,
    candidate_model: bytes | None = None,
    arena_bytes: int | None = None,
    reference: str = "ref",
) -> ParityRun:
    """Compare TFLM with LiteRT's ``reference`` kernels on every output; never raises on a
    difference (see :func:`check_runtime_parity` for the arguments and the accepted FC case).

    When they disagree, the first divergent op is looked up on the worst sample and the
    comparison's ``passed`` is False unless the known FULLY_CONNECTED difference explains it.
    """
    from firmware_export.fidelity import merge_outputs
    from firmware_export.tflm import run_tflm_outputs

    tflm_model = candidate_model if candidate_model is not None else model_bytes
    ref = run_litert_outputs(model_bytes, int8_inputs, reference)
    cand = run_tflm_outputs(tflm_model, int8_inputs, arena_bytes)
    per_output = [
        Comparison(
            "tflm_vs_litert_ref",
            len(r),
            "LSB",
            **_figures(r, c, "tflm_vs_litert_ref"),
            tolerance={"max_abs_max": float(tolerance_lsb)},
            passed=bool(np.max(np.abs(c.astype(np.int64) - r.astype(np.int64))) <= tolerance_lsb),
            top1_agreement=_top1(r, c),
        )
        for r, c in zip(ref, cand, strict=True)
    ]
    comparison = merge_outputs("tflm_vs_litert_ref", per_output)
    if comparison.passed:
        return ParityRun(comparison, ref, cand)
    batch = prepare_samples(model_bytes, int8_inputs)
    msg, first = _parity_failure(
        model_bytes, tflm_model, batch, ref, cand, tolerance_lsb, reference
    )
    comparison = replace(comparison, first_divergent_op=first)
    if comparison.max_abs <= 1 and first is not None and " FULLY_CONNECTED " in f"{first} ":
        accepted = replace(comparison, passed=True, known_difference=KNOWN_FC_DIFFERENCE)
        return ParityRun(accepted, ref, cand)
    return ParityRun(comparison, ref, cand, msg)


def check_runtime_parity(
    model_bytes: bytes,
    int8_inputs: Sequence[np.ndarray] | np.ndarray,
    tolerance_lsb: int = 0,
    *,
    candidate_model: bytes | None = None,
    arena_bytes: int | None = None,
    reference: str = "ref",
) -> Comparison:
    """Check that TFLM reproduces LiteRT's reference kernels (expected: bit-identical).

    One difference is known and accepted: LiteRT's reference FULLY_CONNECTED requantizes in
    float while TFLM (what the device runs) requantizes in integers, so they can differ by
    1 LSB. When the first divergent op is a FULLY_CONNECTED and no output differs by more
    than 1 LSB, the comparison passes and ``known_difference`` says why.

    Args:
        model_bytes: The int8 ``.tflite`` model.
        int8_inputs: Batch for input 0 in the input dtype.
        tolerance_lsb: Largest accepted difference in output LSB (``--tflm-tolerance``).
        candidate_model: A same-graph model for TFLM to run instead (see
            :func:`first_divergent_op`); default ``model_bytes``.
        arena_bytes: TFLM arena; default the host default of :func:`run_tflm`.
        reference: LiteRT resolver to compare with (``"ref"``; ``"builtin"`` when the
            reference resolver lacks an op of the model).

    Returns:
        The comparison in LSB (passed), worst over the outputs, per output in ``outputs``.

    Raises:
        VerificationError: Some output differs by more than ``tolerance_lsb`` LSB; the
            message names the first divergent op and the way to raise the tolerance, and
            its ``comparison`` attribute holds the failed :class:`Comparison` for the report.
    """
    run = runtime_parity(
        model_bytes,
        int8_inputs,
        tolerance_lsb,
        candidate_model=candidate_model,
        arena_bytes=arena_bytes,
        reference=reference,
    )
    if run.comparison.passed:
        return run.comparison
    err = VerificationError(run.message or "TFLM and LiteRT disagree")
    err.comparison = run.comparison  # type: ignore[attr-defined]
    raise err


def _parity_failure(
    model_bytes: bytes,
    tflm_model: bytes,
    batch: np.ndarray,
    ref: list[np.ndarray],
    cand: list[np.ndarray],
    tolerance_lsb: int,
    reference: str,
) -> tuple[str, str | None]:
    """Explain a parity failure: how far, how often, where it starts, and the way out."""
    n = len(ref[0])
    per_output = np.stack(
        [
            np.abs(c.astype(np.int64) - r.astype(np.int64)).reshape(n, -1).max(axis=1)
            for r, c in zip(ref, cand, strict=True)
        ],
        axis=1,
    )  # (samples, outputs)
    per_sample = per_output.max(axis=1)
    worst = int(np.argmax(per_sample))
    bad = int(np.sum(per_sample > tolerance_lsb))
    largest = int(per_sample.max())
    where = [
        f"out{k}" for k in range(per_output.shape[1]) if per_output[:, k].max() > tolerance_lsb
    ]
    first = first_divergent_op(
        model_bytes,
        batch[worst],
        candidate_model=tflm_model,
        tolerance_lsb=tolerance_lsb,
        reference=reference,
    )
    kernels = "reference" if reference == "ref" else reference
    on = "output 0" if len(ref) == 1 else f"output(s) {', '.join(where)}"
    msg = (
        f"TFLM and LiteRT's {kernels} kernels disagree by up to {largest} LSB on {on} "
        f"(tolerance {tolerance_lsb} LSB) in {bad}/{n} samples; first divergent op on "
        f"sample {worst}: {first or 'none found (only the final outputs differ)'}. They are "
        f"expected to be bit-identical; if a small difference is acceptable (e.g. a kernel "
        f"variant), raise the tolerance with --tflm-tolerance {largest}."
    )
    return msg, first


def xnnpack_vs_ref(
    model_bytes: bytes, int8_inputs: Sequence[np.ndarray] | np.ndarray, tolerance_lsb: int = 1
) -> Comparison:
    """Compare LiteRT with XNNPACK against the reference kernels, in LSB; never raises.

    XNNPACK may round requantization differently (up to 1 LSB was seen), so ``passed`` is
    informative only: the export reports it but does not fail on it.
    """
    ref = run_litert_outputs(model_bytes, int8_inputs, "ref")
    fast = run_litert_outputs(model_bytes, int8_inputs, "xnnpack")
    return lsb_comparison("litert_xnnpack_vs_ref", ref, fast, tolerance_lsb)


def lsb_comparison(
    name: str, reference: list[np.ndarray], candidate: list[np.ndarray], tolerance_lsb: int
) -> Comparison:
    """Two runtimes' int8 outputs compared in LSB, per output, merged (never raises)."""
    from firmware_export.fidelity import merge_outputs

    per_output = [
        Comparison(
            name,
            len(r),
            "LSB",
            **(f := _figures(r, c, name)),
            tolerance={"max_abs_max": float(tolerance_lsb)},
            passed=f["max_abs"] <= tolerance_lsb,
            top1_agreement=_top1(r, c),
        )
        for r, c in zip(reference, candidate, strict=True)
    ]
    return merge_outputs(name, per_output)


# --- functions that run in the child process ------------------------------------------------


def _litert_interpreter(model_bytes: bytes, resolver: str, preserve: bool = False) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = {
        "ref": OpResolverType.BUILTIN_REF,
        "xnnpack": OpResolverType.AUTO,
        "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    }[resolver]
    interp = Interpreter(
        model_content=model_bytes,
        num_threads=1,
        experimental_op_resolver_type=kind,
        experimental_preserve_all_tensors=preserve,
    )
    interp.allocate_tensors()
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
