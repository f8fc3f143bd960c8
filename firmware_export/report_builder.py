"""From an int8 flatbuffer to the figures a report carries: analysis, lint, target op check,
verification, measured TFLM arena (+ margin), C sources and the budget check.

Shared by ``tinyprune export`` (which also has the float model to verify against) and
``tinyprune report`` (which may only have a ``.tflite`` from elsewhere).
"""

from __future__ import annotations

import hashlib
import logging
import math
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from torch import nn

from firmware_export.analyze import LintIssue, ModelAnalysis, analyze_tflite, lint_int8
from firmware_export.arena_plan import ArenaPlan, plan_arena
from firmware_export.budget import BudgetReport, DeviceProfile, check_budget
from firmware_export.c_array import CModelInfo, CSource, TensorSpec, to_c_source
from firmware_export.checks import VerifyInputs, lint_gate
from firmware_export.layer_names import LayerNames, annotate, op_labels, tensor_labels
from firmware_export.op_support import (
    name_divergent_ops,
    naming_layers,
    tflm_kernel_failure,
    unsupported_kernel,
)
from firmware_export.tflite_model import TfliteModel, parse_tflite
from firmware_export.tflm import DEFAULT_HOST_ARENA, check_ops, tflm_builtin_ops
from firmware_export.verification import run_verification

if TYPE_CHECKING:
    from firmware_export.pipeline import ExportOptions

log = logging.getLogger(__name__)


class _Timer(Protocol):
    def __call__(self, name: str) -> AbstractContextManager[None]: ...


@dataclass(frozen=True)
class ReportInputs:
    """Everything known about the model being reported on."""

    name: str
    source: str
    model_bytes: bytes
    profile: DeviceProfile
    float_tflite: bytes | None = None
    onnx_bytes: bytes | None = None
    module: nn.Module | None = None
    samples: np.ndarray | None = None  # float, PyTorch layout (verification samples)
    rewrites: tuple[str, ...] = ()
    calib_count: int = 0
    float_reference: np.ndarray | None = None  # Keras sources: the float model's outputs
    channels_last: bool = False  # samples are already NHWC (Keras sources)
    select: int | None = None  # --output: the module's output that was exported
    output_info: tuple[dict[str, Any], ...] = ()  # per exported output: label, origin, ...
    can_embed_plan: bool = False  # the caller ships the returned bytes (export, not report)
    layer_names: LayerNames | None = None  # TFLite tensor names -> PyTorch module paths


@dataclass(frozen=True)
class ArenaFigures:
    """Measured arena, the header's arena for the device, and the analytical lower bound."""

    measured: int | None  # TFLM recording allocator on this host (None: TFLM can't run it)
    smallest: int | None  # bisection: smallest arena TFLM runs the shipped model in
    lower_bound: int  # peak of live activation bytes in execution order
    margin: int  # the explicit --arena-margin extra
    margin_reason: str
    plan: ArenaPlan | None = None  # None when TFLM cannot run the model
    device_bytes: int | None = None  # computed arena for the target (before the margin)

    @property
    def base(self) -> int:
        """Smallest arena TFLM ran in on this host, or the analytical bound when it cannot run."""
        return self.smallest if self.smallest is not None else self.lower_bound

    @property
    def device(self) -> int:
        """The computed arena for the 32-bit target (head + tail + scratch), before the margin."""
        return self.device_bytes if self.device_bytes is not None else self.lower_bound

    @property
    def for_device(self) -> int:
        """What the header tells firmware to allocate: the device figure plus the margin."""
        return self.device + self.margin


def tinyprune_version() -> str:
    """The installed tinyprune's version (read from its metadata: no import of tinyprune)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tinyprune")
    except PackageNotFoundError:
        return "unknown"


def arena_figures(
    model_bytes: bytes,
    analysis: ModelAnalysis,
    runnable: bool,
    fraction: float,
    minimum: int,
    *,
    mode: str = "auto",
    profile: DeviceProfile | None = None,
    can_embed: bool = True,
) -> ArenaFigures:
    """Plan and measure the arena on TFLM (when it can run the model), add the explicit margin.

    The device figure is head + 32-bit tail + CMSIS-NN scratch
    (:mod:`firmware_export.arena_plan`); the margin is ``max(minimum, fraction x device)``
    rounded to 16 B, 0 by default.
    """
    plan = None
    tflm_target = profile is None or profile.runtime == "tflm"
    if runnable:
        name = profile.name if profile is not None else "cortex-m4"
        isa = profile.cmsis_nn_isa if profile is not None else ""
        plan = plan_arena(
            model_bytes,
            mode if tflm_target else "online",
            name,
            isa,
            can_embed=can_embed and tflm_target,
        )
    device = plan.device_bytes if plan is not None else analysis.activation_lower_bound_bytes
    if plan is not None and not tflm_target:  # a 64-bit LiteRT board: the host figure holds
        device = plan.shipped.smallest_bytes
    margin = max(minimum, math.ceil(device * fraction)) if fraction or minimum else 0
    margin = (margin + 15) // 16 * 16
    reason = f"explicit --arena-margin: max({minimum} B, {fraction:.0%}), rounded to 16 B"
    if plan is None:
        reason = (
            "TFLM cannot run this model; the base is the analytical lower bound, an estimate "
            "(no tail, no scratch). " + reason
        )
        return ArenaFigures(None, None, analysis.activation_lower_bound_bytes, margin, reason)
    shipped = plan.shipped
    return ArenaFigures(
        shipped.recorded_bytes,
        shipped.smallest_bytes,
        analysis.activation_lower_bound_bytes,
        margin,
        reason,
        plan,
        device,
    )


@dataclass(frozen=True)
class Analysed:
    """The report dict plus the objects the report files and the C sources are rendered from."""

    report: dict[str, Any]
    analysis: ModelAnalysis
    budget: BudgetReport
    sources: CSource | None
    model_bytes: bytes  # the model as shipped (with the offline memory plan when embedded)


def analyze_and_report(inp: ReportInputs, opts: ExportOptions, timer: _Timer) -> Analysed:
    """Run every post-conversion check; C sources only when TFLM can run the model."""
    from firmware_export.report import ReportArena, build_report_dict

    parsed = parse_tflite(inp.model_bytes)
    by_tensor = tensor_labels(parsed, inp.layer_names)
    by_op = op_labels(parsed, inp.layer_names)
    with naming_layers(by_tensor, by_op, inp.profile.runtime, inp.profile.name):
        with timer("check"):
            analysis, lint, ops, runnable = _check(inp, parsed, by_tensor)
        with timer("verify"):
            verify = run_verification(
                VerifyInputs(
                    inp.model_bytes,
                    inp.float_tflite,
                    inp.onnx_bytes,
                    inp.module,
                    inp.samples,
                    runnable,
                    inp.float_reference,
                    inp.channels_last,
                    runtime=inp.profile.runtime,
                    select=inp.select,
                ),
                float_tolerance=opts.float_tolerance,
                min_cosine=opts.min_cosine,
                tflm_tolerance_lsb=opts.tflm_tolerance_lsb,
                min_centred_cosine=getattr(opts, "min_centred_cosine", None),
            )
        with timer("arena"):
            arena = arena_figures(
                inp.model_bytes,
                analysis,
                runnable,
                opts.arena_margin_fraction,
                opts.arena_margin_min_bytes,
                mode=opts.memory_plan,
                profile=inp.profile,
                can_embed=inp.can_embed_plan,
            )
    if arena.plan is not None and arena.plan.embedded:
        inp = replace(inp, model_bytes=arena.plan.model_bytes)
        analysis = analyze_tflite(inp.model_bytes)  # flash: the planned file is a little larger
        analysis = annotate(analysis, parse_tflite(inp.model_bytes), inp.layer_names)
    sources = c_sources(inp, analysis, arena, ops) if runnable else None
    io_bytes = sum(t.nbytes for t in (*analysis.inputs, *analysis.outputs))
    budget = check_budget(
        inp.profile,
        model_bytes=len(inp.model_bytes),
        arena_bytes=arena.for_device,
        io_bytes=io_bytes,
        macs=analysis.macs,
    )
    report = build_report_dict(
        analysis=analysis,
        budget=budget,
        profile=inp.profile,
        arena=ReportArena(arena.base, arena.margin, arena.margin_reason, arena.for_device),
        verify=verify,
        lint=lint,
        extra=_extra(inp, arena, ops, runnable, analysis, parsed),
    )
    _label_outputs(report, inp)
    for entry in report.get("lint", []):
        entry["layer"] = by_tensor.get(entry["tensor"], "")
    name_divergent_ops(report["verify"], by_tensor)
    return Analysed(report, analysis, budget, sources, inp.model_bytes)


def _check(
    inp: ReportInputs, parsed: TfliteModel, by_tensor: dict[str, str]
) -> tuple[ModelAnalysis, list[LintIssue], list[str], bool]:
    """Analysis, int8 lint gate, target op check and whether TFLM can run the model.

    TFLM registers some ops whose kernels take float only (EXP, LOG, SQRT, ...): one run on
    zeros finds them; that is exit 4 for a TFLM target, and for a LiteRT target TFLM is then
    only left out (no C sources; the arena is the analytical bound).
    """
    analysis = annotate(analyze_tflite(inp.model_bytes), parsed, inp.layer_names)
    lint = lint_int8(parsed)
    lint_gate(lint)
    ops = check_ops(inp.model_bytes, inp.profile.runtime, inp.profile.name, by_tensor)
    runnable = set(ops) <= tflm_builtin_ops()
    if runnable:
        arena = max(DEFAULT_HOST_ARENA, 4 * analysis.activation_lower_bound_bytes)
        failure = tflm_kernel_failure(inp.model_bytes, arena)
        if failure is not None and inp.profile.runtime == "tflm":
            layer = op_labels(parsed, inp.layer_names).get(failure.index)
            raise unsupported_kernel(failure, inp.profile.name, layer)
        if failure is not None:
            log.warning(
                "TFLite Micro cannot run this int8 model (%s op %d: %s); it is left out of the "
                "verification, no C sources are written and the arena is an estimate",
                failure.op,
                failure.index,
                failure.reason,
            )
            runnable = False
    return analysis, lint, ops, runnable


def _extra(
    inp: ReportInputs,
    arena: ArenaFigures,
    ops: list[str],
    runnable: bool,
    analysis: ModelAnalysis,
    parsed: TfliteModel,
) -> dict[str, Any]:
    p = inp.profile
    latency = None
    if p.cycles_per_mac is not None:
        latency = {
            "ms": analysis.macs * p.cycles_per_mac / (p.clock_mhz * 1e3),
            "estimate": True,
            "formula": "MACs x cycles_per_mac / clock",
            "source": p.cycles_per_mac_source or "profile",
        }
    return {
        "name": inp.name,
        "source": inp.source,
        "sha256": _sha(inp.model_bytes),
        "tinyprune_version": tinyprune_version(),
        "rewrites": list(inp.rewrites),
        "calibration_samples": inp.calib_count,
        "verify_samples": 0 if inp.samples is None else len(inp.samples),
        "tflm_runnable": runnable,
        "ops_used": ops,
        "latency_estimate": latency,
        "arena": {
            "recorded_bytes": arena.measured,
            "smallest_bytes": arena.smallest,
            "lower_bound_bytes": arena.lower_bound,
            "margin_bytes": arena.margin,
            "header_bytes": arena.for_device,
            "measured": arena.measured is not None,
            "plan": arena.plan.to_report() if arena.plan is not None else None,
        },
        "float_ops": float_ops(parsed),
        "sparsity_note": _sparsity_note(analysis, p.runtime),
    }


def _label_outputs(report: dict[str, Any], inp: ReportInputs) -> None:
    """Give each entry of ``report["outputs"]`` its index, label and origin in ``forward``."""
    for k, row in enumerate(report["outputs"]):
        info = inp.output_info[k] if k < len(inp.output_info) else {}
        row.update({"index": k, "label": f"out{k}", **info})
    report["output_selected"] = inp.select


def float_ops(model: TfliteModel) -> list[str]:
    """Ops that still compute in float in a "full-int8" model (the converter keeps an op in
    float, between DEQUANTIZE and QUANTIZE, when it has no int8 kernel, e.g. CONV_3D).
    """
    return [
        f"op {op.index} {op.name}"
        for op in model.ops
        if op.name not in ("DEQUANTIZE", "QUANTIZE")
        and any(model.tensors[t].dtype == "FLOAT32" for t in op.outputs if t >= 0)
    ]


def _sparsity_note(analysis: ModelAnalysis, runtime: str) -> str | None:
    """What unstructured zeros buy on this runtime, said plainly (None for a dense model)."""
    if analysis.density > 0.98:
        return None
    zeros = f"{1 - analysis.density:.0%} of the weights are zero"
    if runtime == "tflm":
        return (
            f"{zeros}, but TFLM has no sparse kernels and stores weights dense: flash, arena "
            "and latency do not shrink with unstructured sparsity (non-zero MACs are shown for "
            "reference only); prune channels (structured) to make the model smaller and faster"
        )
    return (
        f"{zeros}; LiteRT runs dense kernels, so latency and RAM do not shrink; the sparse "
        "TFLite encoding (report['sparse'], when smaller) only shrinks the file"
    )


def c_sources(
    inp: ReportInputs, analysis: ModelAnalysis, arena: ArenaFigures, ops: list[str]
) -> CSource:
    """Render model_data.h/.cc for the model."""

    def spec(t: Any, label: str = "") -> TensorSpec:
        return TensorSpec(
            tuple(t.shape),
            t.dtype,
            t.scale[0] if t.scale else 0.0,
            t.zero_point[0] if t.zero_point else 0,
            label,
        )

    origins = [i.get("origin", "") for i in inp.output_info]

    info = CModelInfo(
        name=inp.name,
        inputs=tuple(spec(t) for t in analysis.inputs),
        outputs=tuple(
            spec(t, f"out{k}" + (f" = {origins[k]}" if k < len(origins) else ""))
            for k, t in enumerate(analysis.outputs)
        ),
        arena_bytes=arena.base,
        arena_margin_bytes=arena.margin,
        arena_margin_reason=arena.margin_reason,
        arena_parts=header_arena_parts(arena),
        tflm_ops=tuple(ops),
        tinyprune_version=tinyprune_version(),
        sha256=_sha(inp.model_bytes),
    )
    return to_c_source(inp.model_bytes, info)


def header_arena_parts(arena: ArenaFigures) -> tuple[tuple[str, int, str], ...]:
    """The header's arena constant as (name, bytes, what) parts that sum to it."""
    p = arena.plan
    if p is None or arena.device != p.device_bytes:  # LiteRT targets: the host figure holds
        return ()
    which = "offline plan embedded in the model" if p.embedded else "TFLM's online greedy plan"
    return (
        ("Head", p.plan.head, f"tensor head, {which}"),
        (
            "Scratch",
            p.device_head - p.plan.head,
            f"CMSIS-NN ({p.isa}) scratch above the head, largest per op {p.scratch_peak} B, "
            "placed beside the tensors by TFLM's planner",
        ),
        ("Tail", p.tail_32bit, "persistent tail computed for 32-bit pointers"),
        ("Margin", arena.margin, "explicit --arena-margin"),
    )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
