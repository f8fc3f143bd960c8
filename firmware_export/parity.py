"""TFLM against LiteRT's kernels, output by output, and where they first part ways.

TFLM and LiteRT's reference kernels share the reference integer arithmetic, so they are
expected to agree bit for bit; when they do not, :func:`first_divergent_op` names the first
op (execution order) whose output differs. LiteRT with XNNPACK (the Raspberry Pi default) may
round differently by 1 LSB (:func:`xnnpack_vs_ref`). The names are re-exported by
:mod:`firmware_export.verify`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from firmware_export.isolate import run_isolated
from firmware_export.tflite_model import parse_tflite
from firmware_export.tflm import as_batch_of_one, prepare_samples, tflm_tensors
from firmware_export.verify import (
    KNOWN_FC_DIFFERENCE,
    Comparison,
    _figures,
    _litert_tensors_child,
    _top1,
    run_litert_outputs,
)
from tinyprune.errors import ConfigError, VerificationError


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
