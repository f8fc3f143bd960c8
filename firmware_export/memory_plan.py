"""Where TFLM puts each activation in the arena: lifetimes, TFLM's greedy plan, an optimal plan.

TFLM's non-persistent arena (the "head") holds every activation tensor at an offset chosen
by its memory planner. This module reproduces that planner from the flatbuffer alone and
finds a better plan:

* :func:`tensor_buffers`: which tensors TFLM plans and when each is live. Rules of TFLM's
  ``AllocationInfoBuilder`` (``micro/micro_allocator.cc``, ``micro/memory_planner``): only
  tensors without constant data; variable tensors are persistent (tail), never planned; graph
  inputs are created at step 0 and graph outputs live to the end; an op's outputs are created
  at its step, its inputs used at its step; sizes are rounded up to TFLM's 16-byte
  ``MicroArenaBufferAlignment``.
* :func:`greedy_plan`: TFLM's ``GreedyMemoryPlanner`` (largest first, size ties in reverse
  tensor order, each buffer at the lowest offset that clears every simultaneously live one).
* :func:`optimal_plan`: an exact MILP (scipy's HiGHS) for graphs up to
  :data:`MILP_MAX_BUFFERS` buffers, else the best of several first-fit orders; either way
  certified optimal when it reaches :func:`lower_bound` (peak of live bytes).
* :func:`validate_plan`: an independent check run on every plan before it is written.

The plan goes into the model as ``OfflineMemoryAllocation`` metadata (see
:mod:`firmware_export.offline_plan`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from firmware_export.tflite_model import TfliteModel
from tinyprune.errors import ExportError

log = logging.getLogger(__name__)

#: TFLM's ``MicroArenaBufferAlignment()``: every planned buffer size and offset.
ALIGN = 16
#: Above this many buffers the MILP is not tried (its pair constraints grow quadratically).
MILP_MAX_BUFFERS = 160
#: Seconds HiGHS may spend; an unproven MILP result is never used (reproducibility).
MILP_TIME_LIMIT = 20.0


@dataclass(frozen=True)
class Buffer:
    """One planned tensor: its index, aligned size and live steps ``first..last`` (inclusive)."""

    tensor: int
    size: int
    first: int
    last: int

    def overlaps_in_time(self, other: Buffer) -> bool:
        """Whether both are live at some common step."""
        return not (self.first > other.last or other.first > self.last)


@dataclass(frozen=True)
class MemoryPlan:
    """Offsets for some buffers; ``head`` is the highest end (bytes of arena they need)."""

    buffers: tuple[Buffer, ...]
    offsets: dict[int, int]  # tensor index -> byte offset in the arena
    method: str  # "tflm-greedy", "milp", "first-fit(<order>)"
    proven_optimal: bool = False

    @property
    def head(self) -> int:
        """Bytes from the arena start to the end of the highest buffer."""
        return max((self.offsets[b.tensor] + b.size for b in self.buffers), default=0)


def align_up(n: int, align: int = ALIGN) -> int:
    """``n`` rounded up to a multiple of ``align``."""
    return (n + align - 1) // align * align


def tensor_buffers(model: TfliteModel, variables: frozenset[int] = frozenset()) -> list[Buffer]:
    """The tensors TFLM's planner places, with their aligned sizes and lifetimes.

    Args:
        model: The parsed main subgraph.
        variables: Indices of variable tensors (persistent in TFLM, so not planned).

    Returns:
        Buffers in tensor-index order (TFLM's requirement order).
    """
    end = len(model.ops)  # TFLM marks graph outputs used at the scope after the last op
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t in model.inputs:
        first.setdefault(t, 0)
    for op in model.ops:
        for t in op.inputs:
            if t >= 0:
                last[t] = op.index
        for t in op.outputs:
            if t >= 0:
                first.setdefault(t, op.index)
    for t in model.outputs:
        last[t] = end
    out = []
    for t in sorted(first):
        info = model.tensors[t]
        if info.is_constant or t in variables or info.nbytes == 0:
            continue
        f = first[t]
        out.append(Buffer(t, align_up(info.nbytes), f, max(last.get(t, f), f)))
    return out


def live_bytes(buffers: Sequence[Buffer]) -> list[int]:
    """Sum of live buffer sizes at each step ``0..max(last)``: the lower-bound curve."""
    if not buffers:
        return []
    steps = max(b.last for b in buffers) + 1
    curve = np.zeros(steps + 1, dtype=np.int64)
    for b in buffers:
        curve[b.first] += b.size
        curve[b.last + 1] -= b.size
    return [int(x) for x in np.cumsum(curve)[:steps]]


def lower_bound(buffers: Sequence[Buffer]) -> int:
    """No plan of these buffers needs fewer bytes than the peak of :func:`live_bytes`."""
    return max(live_bytes(buffers), default=0)


def _first_fit(order: Sequence[Buffer], fixed: Sequence[tuple[int, Buffer]] = ()) -> dict[int, int]:
    """Place buffers in ``order``, each at the lowest offset clearing the live placed ones.

    This is TFLM's ``GreedyMemoryPlanner::CalculateOffsetsIfNeeded`` loop: placed buffers are
    kept sorted by offset; the candidate starts at 0 and is pushed past every simultaneously
    live buffer until the gap before the next one fits. ``fixed`` (offset, buffer) pairs are
    placed first, as TFLM places offline-planned buffers.
    """
    placed = sorted(fixed, key=lambda p: (p[0], p[1].tensor))  # (offset, buffer) by offset
    offsets: dict[int, int] = {b.tensor: off for off, b in placed}
    for b in order:
        candidate = 0
        for off, other in placed:
            if not b.overlaps_in_time(other):
                continue
            if off - candidate >= b.size:
                break
            candidate = max(candidate, off + other.size)
        offsets[b.tensor] = candidate
        k = next((i for i, (off, _) in enumerate(placed) if off > candidate), len(placed))
        placed.insert(k, (candidate, b))
    return offsets


def greedy_plan(buffers: Sequence[Buffer], fixed: dict[int, int] | None = None) -> MemoryPlan:
    """TFLM's online plan: largest first; equal sizes in reverse tensor order.

    TFLM fills its sort array from the tail (so in reverse requirement order) and sorts it
    with a stable bubble sort by size, descending: ties stay in reverse tensor order.

    Args:
        buffers: Buffers in requirement order (tensors by index, then kernel scratch).
        fixed: Offline offsets (tensor -> offset) of buffers TFLM does not place itself; the
            others (e.g. scratch) are placed online around them.
    """
    fixed = fixed or {}
    pinned = [(fixed[b.tensor], b) for b in buffers if b.tensor in fixed]
    online = [b for b in buffers if b.tensor not in fixed]
    order = sorted(reversed(online), key=lambda b: -b.size)  # stable
    method = "tflm-greedy" if not fixed else "offline+tflm-greedy"
    return MemoryPlan(tuple(buffers), _first_fit(order, pinned), method)


_Order = Callable[[Buffer], tuple[int, int, int]]
_ORDERS: dict[str, _Order] = {
    "size": lambda b: (-b.size, b.first, b.tensor),
    "size*life": lambda b: (-b.size * (b.last - b.first + 1), -b.size, b.tensor),
    "start": lambda b: (b.first, -b.size, b.tensor),
    "life": lambda b: (-(b.last - b.first), -b.size, b.tensor),
    "end": lambda b: (-b.last, -b.size, b.tensor),
}


def heuristic_plan(buffers: Sequence[Buffer]) -> MemoryPlan:
    """Best of first-fit in several orders, plus peak-first (buffers live at the peak first).

    Deterministic; certified optimal when its head equals :func:`lower_bound`.
    """
    bound = lower_bound(buffers)
    best: MemoryPlan | None = None
    curve = live_bytes(buffers)
    peaks = [s for s, v in enumerate(curve) if v == bound]
    for name, key in _ORDERS.items():
        for peak_first in (False, True):
            if peak_first:
                at = peaks[0] if peaks else 0
                order = sorted(buffers, key=_live_first(key, at))
            else:
                order = sorted(buffers, key=key)
            plan = MemoryPlan(
                tuple(buffers),
                _first_fit(order),
                f"first-fit({name}{', peak-first' if peak_first else ''})",
            )
            if best is None or plan.head < best.head:
                best = plan
    assert best is not None
    return MemoryPlan(best.buffers, best.offsets, best.method, best.head == bound)


def _live_first(key: _Order, step: int) -> Callable[[Buffer], tuple[bool, tuple[int, int, int]]]:
    """``key``, with the buffers live at ``step`` ordered first."""
    return lambda b: (not b.first <= step <= b.last, key(b))


def optimal_plan(buffers: Sequence[Buffer], time_limit: float = MILP_TIME_LIMIT) -> MemoryPlan:
    """The smallest-head plan found: heuristic, then the exact MILP when it is not proven.

    The MILP result is only used when HiGHS proves it optimal within ``time_limit``, so the
    plan (and the model it is embedded in) is the same on every run.
    """
    buffers = list(buffers)
    heur = heuristic_plan(buffers)
    if heur.proven_optimal or len(buffers) > MILP_MAX_BUFFERS:
        return heur
    milp = _milp_plan(buffers, heur.head, time_limit)
    if milp is not None and milp.head < heur.head:
        return milp
    return heur


def _milp_plan(buffers: list[Buffer], upper: int, time_limit: float) -> MemoryPlan | None:
    """Exact strip packing in 16-byte units: offsets o_i, order binaries z_ij, peak H.

    For every pair live at once: o_i + s_i <= o_j + U (1 - z) and o_j + s_j <= o_i + U z,
    with U the heuristic's head (a feasible height, so a valid big-M).
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    n = len(buffers)
    pairs = [
        (i, j) for i in range(n) for j in range(i + 1, n) if buffers[i].overlaps_in_time(buffers[j])
    ]
    units = [b.size // ALIGN for b in buffers]
    big = upper // ALIGN
    nv = n + len(pairs) + 1  # offsets, pair binaries, height
    rows: list[np.ndarray] = []
    lo: list[float] = []
    hi: list[float] = []
    for i in range(n):  # o_i + s_i - H <= 0
        r = np.zeros(nv)
        r[i], r[-1] = 1, -1
        rows.append(r)
        lo.append(-np.inf)
        hi.append(-units[i])
    for k, (i, j) in enumerate(pairs):
        r = np.zeros(nv)  # o_i - o_j + U z <= U - s_i
        r[i], r[j], r[n + k] = 1, -1, big
        rows.append(r)
        lo.append(-np.inf)
        hi.append(big - units[i])
        r = np.zeros(nv)  # o_j - o_i - U z <= -s_j
        r[j], r[i], r[n + k] = 1, -1, -big
        rows.append(r)
        lo.append(-np.inf)
        hi.append(-units[j])
    c = np.zeros(nv)
    c[-1] = 1
    ub = np.array([big - u for u in units] + [1] * len(pairs) + [big], dtype=float)
    res = milp(
        c,
        constraints=LinearConstraint(np.array(rows), lo, hi),
        integrality=np.ones(nv),
        bounds=Bounds(np.zeros(nv), ub),
        options={"time_limit": time_limit, "disp": False},
    )
    if res.status != 0 or res.x is None:  # 0: proven optimal
        log.info(
            "MILP not proven optimal in %.0f s (%s); keeping the heuristic", time_limit, res.message
        )
        return None
    offsets = {b.tensor: int(round(res.x[i])) * ALIGN for i, b in enumerate(buffers)}
    return MemoryPlan(tuple(buffers), offsets, "milp", proven_optimal=True)


def validate_plan(plan: MemoryPlan, align: int = ALIGN) -> None:
    """Check a plan independently of how it was made; raise if it could corrupt a tensor.

    Checks: every buffer has a non-negative offset that is a multiple of ``align``, and no two
    buffers live at a common step share a byte (sweep over steps, sorted by offset).

    Raises:
        ExportError: An offset is missing, negative or misaligned, or two live buffers overlap
            (an all-zero plan of two or more simultaneously live buffers is one).
    """
    for b in plan.buffers:
        off = plan.offsets.get(b.tensor)
        if off is None or off < 0 or off % align:
            msg = (
                f"memory plan invalid: tensor {b.tensor} offset {off!r} is not a {align}-byte "
                "aligned offset >= 0"
            )
            raise ExportError(msg, stage="memory-plan")
    if not plan.buffers:
        return
    for step in range(max(b.last for b in plan.buffers) + 1):
        live = sorted(
            (b for b in plan.buffers if b.first <= step <= b.last),
            key=lambda b: (plan.offsets[b.tensor], b.tensor),
        )
        reach, owner = 0, None  # highest end so far and its buffer
        for b in live:
            off = plan.offsets[b.tensor]
            if owner is not None and off < reach:
                msg = (
                    f"memory plan invalid: tensors {owner.tensor} (ends at {reach}) and "
                    f"{b.tensor} [{off}, {off + b.size}) are both live at step {step} and overlap"
                )
                raise ExportError(msg, stage="memory-plan")
            if off + b.size > reach:
                reach, owner = off + b.size, b


def variable_tensors(model_bytes: bytes) -> frozenset[int]:
    """Indices of the main subgraph's variable tensors (``is_variable`` in the schema)."""
    from firmware_export.tflite_model import _schema

    sg = _schema().Model.GetRootAs(bytearray(model_bytes), 0).Subgraphs(0)
    return frozenset(i for i in range(sg.TensorsLength()) if sg.Tensors(i).IsVariable())


def scratch_buffers(model: TfliteModel, scratch: dict[int, int]) -> list[Buffer]:
    """Kernel scratch (op index -> bytes) as one-step buffers after the tensors, as TFLM adds
    them to its planner; their keys are ``len(model.tensors) + k``.
    """
    base = len(model.tensors)
    return [
        Buffer(base + k, align_up(size), op, op)
        for k, (op, size) in enumerate(sorted(scratch.items()))
    ]
