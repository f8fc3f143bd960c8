"""The verification plan: which runtime's int8 outputs are judged against float, per target.

What gates an export (exit 5 on failure) depends on what runs on the device:

- every target: PyTorch vs ONNX Runtime, ONNX Runtime vs the float TFLite model (a silently
  broken conversion), on every output;
- ``int8_vs_float``: the int8 outputs *of the target's runtime* against float, on every output:
  LiteRT with its default XNNPACK delegate for LiteRT targets (what a Raspberry Pi runs), TFLM
  for TFLM targets. Plain cosine >= ``min_cosine`` always; centred cosine >= ``min_centred_cosine``
  where the output varies across the samples (:mod:`firmware_export.fidelity`);
- ``tflm_vs_litert_ref``: TFLM against LiteRT's reference kernels, bit-exact by default, gating
  TFLM targets only. When they differ, each output says which runtime is closer to float
  (``closer_to_float``); if TFLM's own int8-vs-float fidelity meets the tolerance the check
  passes with ``verdict: kernel_difference`` (two integer kernels round differently, TFLM's
  result is still faithful); otherwise it is a real disagreement with float: exit 5.

Reported, never gating: LiteRT's reference kernels vs float (``litert_ref_vs_float``), TFLM vs
float on LiteRT targets (``tflm_vs_float``), XNNPACK vs reference in LSB, and the TFLM parity
on LiteRT targets. Each entry of ``verify.json`` says whether it ``gate``s and, for int8
outputs, which ``runtime`` produced them; ``outputs`` holds the figures of every output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from firmware_export import parity as par
from firmware_export import verify as v
from firmware_export.checks import VerifyInputs, _int8_inputs, _match_layout, missing_kernels
from firmware_export.fidelity import merge_outputs
from firmware_export.outputs import output_label
from firmware_export.tflite_model import TensorInfo, parse_tflite
from tinyprune.errors import ExportError, MissingKernelError, VerificationError

#: Output LSB accepted between TFLM and LiteRT's optimized (builtin) kernels.
BUILTIN_TOLERANCE_LSB = 2

_RUNTIME_NAMES = {
    "xnnpack": "litert_xnnpack",
    "tflm": "tflm",
    "ref": "litert_ref",
    "builtin": "litert_builtin",
}


@dataclass
class _Runs:
    """int8 outputs per runtime (None: the runtime cannot run the model)."""

    ref: list[np.ndarray] | None = None
    tflm: list[np.ndarray] | None = None
    xnnpack: list[np.ndarray] | None = None
    ref_missing: str | None = None  # why LiteRT's reference kernels cannot run the model
    xnnpack_failed: str | None = None  # why XNNPACK cannot run it (TFLM targets: reported)
    parity: par.ParityRun | None = None
    parity_reference: str = "ref"


def run_verification(
    inp: VerifyInputs,
    *,
    float_tolerance: float,
    min_cosine: float,
    tflm_tolerance_lsb: int,
    min_centred_cosine: float | None = None,
) -> dict[str, Any]:
    """Run every comparison that applies; raise VerificationError on a gating failure.

    Raises:
        VerificationError: A gating comparison failed (exit 5); ``verify.json`` is not written.
    """
    model = parse_tflite(inp.model_bytes)
    outs = [model.tensors[t] for t in model.outputs]
    int8_in = _int8_inputs(inp.samples, model.tensors[model.inputs[0]], inp.channels_last)
    results: dict[str, Any] = {}
    reference = _reference(inp, results, float_tolerance)
    runs = _run_runtimes(inp, int8_in, tflm_tolerance_lsb)
    centred_min = min_cosine if min_centred_cosine is None else min_centred_cosine
    gate_runtime = "xnnpack" if inp.runtime == "litert" else "tflm"
    if reference is not None:
        limits = v.QuantLimits(min_cos=min_cosine, min_centred_cos=centred_min)
        for step in _fidelity_plan(inp, gate_runtime):
            key, runtime, _ = step
            got = getattr(runs, runtime)
            if got is None:
                results[key] = _skipped(key, runs.ref_missing or f"{runtime} cannot run the model")
                continue
            results[key] = _fidelity(step, reference, got, outs, inp, limits)
        _raise_if_int8_failed(results["int8_vs_float"])
    if runs.parity is not None:
        fidelity = results.get("tflm_vs_float") or results.get("int8_vs_float")
        results["tflm_vs_litert_ref"] = _parity_entry(
            runs, inp.runtime == "tflm", reference, outs, inp, fidelity
        )
    if runs.xnnpack is not None and runs.ref is not None:
        results["litert_xnnpack_vs_ref"] = {
            **par.lsb_comparison("litert_xnnpack_vs_ref", runs.ref, runs.xnnpack, 1).to_dict(),
            "gate": False,
        }
    else:
        results["litert_xnnpack_vs_ref"] = _skipped(
            "litert_xnnpack_vs_ref",
            runs.xnnpack_failed
            or f"LiteRT's reference kernels cannot run this model: {runs.ref_missing}",
        )
    return results


def _fidelity_plan(inp: VerifyInputs, gate_runtime: str) -> list[tuple[str, str, bool]]:
    """(verify.json key, runtime, gates?) of each int8-vs-float comparison."""
    plan = [("int8_vs_float", gate_runtime, True), ("litert_ref_vs_float", "ref", False)]
    if inp.runtime == "litert" and inp.tflm_runnable:
        plan.append(("tflm_vs_float", "tflm", False))
    return plan


def _reference(inp: VerifyInputs, results: dict[str, Any], tol: float) -> list[np.ndarray] | None:
    """Float reference outputs (one array per output), or None without samples."""
    from firmware_export.checks import _float_chain_outputs

    if inp.samples is None:
        return None
    if inp.float_reference is not None:
        ref = inp.float_reference
        return list(ref) if isinstance(ref, (list, tuple)) else [ref]
    return _float_chain_outputs(inp, results, v, tol)


def _run_runtimes(inp: VerifyInputs, int8_in: np.ndarray, tolerance: int) -> _Runs:
    runs = _Runs()
    if inp.tflm_runnable:
        try:
            runs.parity = par.runtime_parity(inp.model_bytes, int8_in, tolerance)
            runs.ref = runs.parity.reference
        except MissingKernelError as e:
            runs.ref_missing = missing_kernels(e)
            runs.parity_reference = "builtin"
            runs.parity = par.runtime_parity(
                inp.model_bytes, int8_in, max(tolerance, BUILTIN_TOLERANCE_LSB), reference="builtin"
            )
        runs.tflm = runs.parity.tflm
    else:
        try:
            runs.ref = v.run_litert_outputs(inp.model_bytes, int8_in, "ref")
        except MissingKernelError as e:
            runs.ref_missing = missing_kernels(e)
    try:
        runs.xnnpack = v.run_litert_outputs(inp.model_bytes, int8_in, "xnnpack")
    except ExportError as e:  # XNNPACK refuses the graph: what a Pi runs, not a Cortex-M
        if inp.runtime != "tflm" or isinstance(e, MissingKernelError):
            raise
        runs.xnnpack_failed = f"LiteRT with XNNPACK cannot run this model: {e}".splitlines()[0]
    if runs.tflm is None and inp.runtime == "tflm":
        runs.tflm = v.run_litert_outputs(inp.model_bytes, int8_in, "builtin")
    return runs


def _dequantized(
    q: list[np.ndarray], outs: list[TensorInfo], reference: list[np.ndarray], channels_last: bool
) -> list[np.ndarray]:
    deq = []
    for k, ref in enumerate(reference):
        t = outs[k]
        d = v.dequantize(q[k], t.scale[0], t.zero_point[0]) if t.scale else q[k]
        deq.append(d.reshape(ref.shape) if channels_last else _match_layout(d, ref))
    return deq


def _fidelity(
    step: tuple[str, str, bool],
    reference: list[np.ndarray],
    q: list[np.ndarray],
    outs: list[TensorInfo],
    inp: VerifyInputs,
    limits: v.QuantLimits,
) -> dict[str, Any]:
    """One int8-vs-float comparison over the outputs that have a float reference.

    ``step`` is ``(key, runtime, gate)`` from :func:`_fidelity_plan`.
    """
    key, runtime, gate = step
    n = min(len(reference), len(outs))
    deq = _dequantized(q, outs, reference[:n], inp.channels_last)
    per_output = [
        v.compare_quantized(
            reference[k],
            deq[k],
            key,
            limits,
            output_scale=outs[k].scale[0] if outs[k].scale else None,
        )
        for k in range(n)
    ]
    entry = {
        **merge_outputs(key, per_output).to_dict(),
        "runtime": _RUNTIME_NAMES[runtime],
        "gate": gate,
    }
    if n < len(outs):
        entry["unverified_outputs"] = [output_label(k) for k in range(n, len(outs))]
        entry["unverified_reason"] = "no float reference for these outputs (Keras source)"
    return entry


def _skipped(name: str, reason: str) -> dict[str, Any]:
    return {"name": name, "skipped": True, "passed": True, "gate": False, "reason": reason}


def _raise_if_int8_failed(entry: dict[str, Any]) -> None:
    if entry.get("skipped") or entry["passed"]:
        return
    bad = [row for row in entry["outputs"] if not row["passed"]]
    parts = []
    for row in bad:
        text = f"{row['label']}: cos={_g(row['cos'])}"
        if row.get("centred_gated"):
            text += (
                f", centred cos={_g(row['centred_cos'])} (input-dependent part; the float output "
                f"varies by {_g(row['variation_lsb'])} LSB across samples)"
            )
        parts.append(text)
    msg = (
        f"verification int8_vs_float failed on {entry['runtime']} ({'; '.join(parts)}; limits "
        f"{entry['tolerance']}): the int8 model does not compute what the float model does"
        " (a low centred cosine means its output does not follow the input). Widen the "
        "calibration set's coverage, look for a layer whose int8 range is set by a large "
        "constant, or lower --min-cosine / --min-centred-cosine"
    )
    raise VerificationError(msg)


def _g(x: Any) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _parity_entry(
    runs: _Runs,
    gates: bool,
    reference: list[np.ndarray] | None,
    outs: list[TensorInfo],
    inp: VerifyInputs,
    fidelity: dict[str, Any] | None,
) -> dict[str, Any]:
    """TFLM vs LiteRT's reference kernels, with the kernel-difference judgement."""
    run = runs.parity
    assert run is not None
    c = run.comparison
    entry = {**c.to_dict(), "gate": gates, "verdict": _verdict(c)}
    if runs.parity_reference == "builtin":
        entry["reference"] = (
            "LiteRT builtin kernels (its reference resolver lacks an op of this model; optimized "
            f"kernels may round differently, up to {BUILTIN_TOLERANCE_LSB} LSB accepted)"
        )
    if run.message is None:
        return entry
    if reference is not None:
        entry["closer_to_float"] = _closer(run, reference, outs, inp)
    faithful = fidelity is not None and not fidelity.get("skipped") and fidelity["passed"]
    if faithful:
        entry.update(passed=True, verdict="kernel_difference", note=_KERNEL_NOTE)
        return entry
    if gates:
        why = (
            "and TFLM's own int8 output fails the int8-vs-float tolerance"
            if fidelity is not None
            else "and without float samples nothing tells which kernels are right (run "
            "`tinyprune export` with calibration data for the full check)"
        )
        err = VerificationError(f"{run.message} {why}.")
        err.comparison = c  # type: ignore[attr-defined]
        raise err
    return entry


_KERNEL_NOTE = (
    "TFLM and LiteRT's reference kernels round differently at some op (see "
    "first_divergent_op and closer_to_float), and TFLM's own int8 output meets the "
    "int8-vs-float tolerance: a kernel difference, not an error"
)


def _verdict(c: v.Comparison) -> str:
    if c.max_abs == 0:
        return "bit_exact"
    if c.known_difference:
        return "known_difference"
    return "within_tolerance" if c.passed else "failed"


def _closer(
    run: par.ParityRun, reference: list[np.ndarray], outs: list[TensorInfo], inp: VerifyInputs
) -> list[dict[str, Any]]:
    """Per output: TFLM's and LiteRT REF's error against float, and which is closer."""
    n = min(len(reference), len(outs))
    tflm = _dequantized(run.tflm, outs, reference[:n], inp.channels_last)
    ref = _dequantized(run.reference, outs, reference[:n], inp.channels_last)
    rows = []
    for k in range(n):
        e_t = float(np.sqrt(np.mean((tflm[k] - reference[k]) ** 2)))
        e_r = float(np.sqrt(np.mean((ref[k] - reference[k]) ** 2)))
        closer = "tflm" if e_t < e_r else "litert_ref" if e_r < e_t else "equal"
        rows.append(
            {
                "index": k,
                "label": output_label(k),
                "tflm_rmse": e_t,
                "litert_ref_rmse": e_r,
                "closer": closer,
            }
        )
    return rows


__all__ = ["BUILTIN_TOLERANCE_LSB", "run_verification"]
