"""The arena a model ships with: plan it, embed the plan when it helps, verify, measure.

Chains :mod:`firmware_export.memory_plan` (TFLM's greedy plan, the optimal plan, the lower
bound), :mod:`firmware_export.offline_plan` (the plan as model metadata) and
:mod:`firmware_export.arena_tail` (the 32-bit tail, CMSIS-NN scratch) into the figures the
header and the report carry. The header's constant is for the model as shipped:

    arena = head on the device + 32-bit tail (+ the explicit ``--arena-margin``)

where the head on the device is TFLM's placement of the (planned or online) tensors plus
the CMSIS-NN scratch buffers of the target's ISA, simulated with TFLM's planner (scratch is
always placed online, around the planned tensors).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from firmware_export.arena_tail import (
    TailItem,
    cmsis_nn_scratch,
    head_and_tail,
    profile_isa,
    tail_items,
)
from firmware_export.memory_plan import (
    MemoryPlan,
    greedy_plan,
    live_bytes,
    lower_bound,
    optimal_plan,
    scratch_buffers,
    tensor_buffers,
    validate_plan,
    variable_tensors,
)
from firmware_export.offline_plan import embed_plan
from firmware_export.tflite_model import parse_tflite
from firmware_export.tflm import ArenaMeasurement, measure_arena, run_tflm
from tinyprune.errors import ConfigError, VerificationError

log = logging.getLogger(__name__)

MODES = ("auto", "offline", "online")
#: Seeded int8 inputs run through the unplanned and the planned model (bit-identical check).
CHECK_SAMPLES = 4


@dataclass(frozen=True)
class ArenaPlan:
    """Every arena figure of the shipped model; see the module docstring for the formula."""

    mode: str  # requested: auto, offline, online
    embedded: bool  # the shipped model carries an offline plan
    model_bytes: bytes  # the model as shipped (planned or the input bytes)
    online_head: int  # TFLM's greedy plan of the tensors (= its measured head on the host)
    offline_head: int  # the optimal plan's head
    lower_bound: int  # peak of live (16-byte aligned) tensor bytes
    plan_method: str
    proven_optimal: bool
    measured_online: ArenaMeasurement
    measured_planned: ArenaMeasurement | None  # None when nothing was embedded
    tail: tuple[TailItem, ...]
    isa: str
    scratch: dict[int, int]  # op index -> CMSIS-NN scratch bytes
    device_head: int  # shipped tensors + scratch, placed as TFLM would on the device
    plan: MemoryPlan = field(repr=False)  # the plan whose head the header is for
    curve: tuple[int, ...] = ()  # live bytes per op step

    @property
    def shipped(self) -> ArenaMeasurement:
        """Host measurement of the model as shipped."""
        return self.measured_planned or self.measured_online

    @property
    def tail_host(self) -> int:
        """Tail bytes on the host (64-bit)."""
        return sum(t.host_bytes for t in self.tail)

    @property
    def tail_32bit(self) -> int:
        """Tail bytes computed for a 32-bit target."""
        return sum(t.bytes_32bit for t in self.tail)

    @property
    def scratch_peak(self) -> int:
        """Largest CMSIS-NN scratch of one op (what the device head adds at most)."""
        return max(self.scratch.values(), default=0)

    @property
    def device_bytes(self) -> int:
        """Arena for the target before any explicit margin: device head + 32-bit tail."""
        return self.device_head + self.tail_32bit

    def to_report(self) -> dict[str, Any]:
        """JSON figures for report.json."""
        head, tail = head_and_tail(self.shipped.allocations)
        return {
            "mode": self.mode,
            "embedded": self.embedded,
            "header_is_for": "offline plan" if self.embedded else "online (TFLM greedy) plan",
            "online_head_bytes": self.online_head,
            "offline_head_bytes": self.offline_head,
            "lower_bound_bytes": self.lower_bound,
            "plan_method": self.plan_method,
            "proven_optimal": self.proven_optimal,
            "measured_head_bytes": head,
            "smallest_online_bytes": self.measured_online.smallest_bytes,
            "smallest_planned_bytes": (
                self.measured_planned.smallest_bytes if self.measured_planned else None
            ),
            "tail_host_bytes": tail,
            "tail_32bit_bytes": self.tail_32bit,
            "tail_items": [t.__dict__ for t in self.tail],
            "cmsis_nn_isa": self.isa,
            "scratch_bytes": {str(k): v for k, v in sorted(self.scratch.items())},
            "scratch_peak_bytes": self.scratch_peak,
            "device_head_bytes": self.device_head,
            "device_bytes": self.device_bytes,
            "live_bytes_per_step": list(self.curve),
            "buffers": [
                {
                    "tensor": b.tensor,
                    "offset": self.plan.offsets[b.tensor],
                    "size": b.size,
                    "first": b.first,
                    "last": b.last,
                }
                for b in self.plan.buffers
            ],
        }


def plan_arena(
    model_bytes: bytes,
    mode: str,
    profile_name: str,
    profile_isa_name: str = "",
    *,
    can_embed: bool = True,
) -> ArenaPlan:
    """Plan, embed when ``mode`` says so, verify and measure; see :class:`ArenaPlan`.

    Args:
        model_bytes: The int8 model (TFLM must be able to run it).
        mode: ``auto`` embeds the optimal plan when its head beats TFLM's greedy plan,
            ``offline`` always embeds it, ``online`` never does.
        profile_name: Target profile name (picks the CMSIS-NN ISA unless declared).
        profile_isa_name: The profile's declared ``cmsis_nn_isa``, if any.
        can_embed: False when the caller cannot ship a rewritten model (``tinyprune report``):
            the plan is then computed and reported but not embedded.

    Raises:
        ConfigError: Unknown mode.
        ExportError: A plan fails validation or the planned model fails its checks.
        VerificationError: The planned model's TFLM outputs differ from the unplanned one's.
    """
    if mode not in MODES:
        msg = f"unknown memory plan mode {mode!r}; choose one of {', '.join(MODES)}"
        raise ConfigError(msg)
    model = parse_tflite(model_bytes)
    buffers = tensor_buffers(model, variable_tensors(model_bytes))
    online, best = greedy_plan(buffers), optimal_plan(buffers)
    validate_plan(online)
    validate_plan(best)
    embed = can_embed and (mode == "offline" or (mode == "auto" and best.head < online.head))
    measured_online = measure_arena(model_bytes)
    shipped, measured_planned = model_bytes, None
    if embed:
        shipped = embed_plan(model_bytes, best)
        check_bit_identical(model_bytes, shipped)
        measured_planned = measure_arena(shipped)
    isa = profile_isa(profile_name, profile_isa_name)
    scratch = cmsis_nn_scratch(model, isa)
    device = greedy_plan(
        [*buffers, *scratch_buffers(model, scratch)], best.offsets if embed else None
    )
    validate_plan(device)
    text = (measured_planned or measured_online).allocations
    return ArenaPlan(
        mode=mode,
        embedded=embed,
        model_bytes=shipped,
        online_head=online.head,
        offline_head=best.head,
        lower_bound=lower_bound(buffers),
        plan_method=best.method,
        proven_optimal=best.proven_optimal,
        measured_online=measured_online,
        measured_planned=measured_planned,
        tail=tuple(tail_items(text)),
        isa=isa,
        scratch=scratch,
        device_head=device.head,
        plan=best if embed else online,
        curve=tuple(live_bytes(buffers)),
    )


def check_bit_identical(unplanned: bytes, planned: bytes, samples: int = CHECK_SAMPLES) -> None:
    """Run seeded int8 inputs through both models on TFLM; raise unless outputs are equal.

    Raises:
        VerificationError: Any output differs (exit 5).
    """
    model = parse_tflite(unplanned)
    info = model.tensors[model.inputs[0]]
    dtype = np.dtype(info.dtype.lower())
    rng = np.random.default_rng(0)
    lim = np.iinfo(dtype) if dtype.kind in "iu" else None
    if lim is not None:
        x = rng.integers(lim.min, lim.max, (samples, *info.shape[1:]), endpoint=True, dtype=dtype)
    else:
        x = rng.standard_normal((samples, *info.shape[1:])).astype(dtype)
    a, b = run_tflm(unplanned, x), run_tflm(planned, x)
    if not np.array_equal(a, b):
        diff = int(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64))))
        msg = (
            f"the model with the offline memory plan gives other TFLM outputs than without it "
            f"(max difference {diff}); export with --memory-plan online"
        )
        raise VerificationError(msg)
