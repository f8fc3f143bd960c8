"""Helpers of the board-fit search (:mod:`tinyprune.app.fit`): where to try next, and why not.

* :func:`next_fraction`: the next MACs fraction to export, interpolated between the largest
  fitting and the smallest failing trial on how far over budget each was (RAM is about linear
  in the channel widths, MACs about quadratic, so the interpolation runs on ``sqrt(fraction)``);
  it stays inside the bracket, so the search keeps the bisection's guarantee.
* :func:`ram_floor_note`: what the RAM of the smallest reachable network is made of (the
  input tensor, its copies in the arena, the largest activations) and what to change when
  pruning cannot make it fit.

Both read only the export report (``report.json``'s dictionary).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: Interpolate to this fraction of the tightest limit (a little inside, so the try can fit).
TARGET_USE = 0.97
#: The interpolated point stays this share of the bracket (in sqrt space) away from its ends.
EDGE = 0.15
_ALIGN = 16
_ITEMSIZE = {"INT8": 1, "UINT8": 1, "INT16": 2, "FLOAT16": 2, "INT32": 4, "FLOAT32": 4}


def budget_use(result: Any) -> float | None:
    """The largest ``used / limit`` over the budget rows of an export result (None: no result)."""
    if result is None:
        return None
    rows = result.report.get("budget") or {}
    ratios = [r["used"] / r["limit"] for r in rows.values() if r.get("limit")]
    return max(ratios) if ratios else None


def next_fraction(lo: float, hi: float, seen: Mapping[float, float | None]) -> float:
    """The next MACs fraction to try between ``lo`` (fits) and ``hi`` (does not).

    ``seen`` maps tried fractions to their :func:`budget_use`. With both ends known the point
    where the use crosses :data:`TARGET_USE` is interpolated linearly in ``sqrt(fraction)``
    and kept :data:`EDGE` away from the ends; otherwise the midpoint in ``sqrt(fraction)``.
    """
    s_lo, s_hi = math.sqrt(lo), math.sqrt(hi)
    u_lo, u_hi = seen.get(lo), seen.get(hi)
    t = 0.5
    if u_lo is not None and u_hi is not None and u_hi > u_lo:
        t = min(max((TARGET_USE - u_lo) / (u_hi - u_lo), EDGE), 1.0 - EDGE)
    return (s_lo + t * (s_hi - s_lo)) ** 2


def _input_bytes(report: Mapping[str, Any]) -> tuple[int, list[str]]:
    total, shapes = 0, []
    for t in report.get("inputs") or []:
        n = math.prod(t["shape"]) * _ITEMSIZE.get(t.get("dtype", "INT8"), 1)
        total += n
        shapes.append("x".join(str(d) for d in t["shape"]) + f" {t.get('dtype', 'INT8').lower()}")
    return total, shapes


def _peak(report: Mapping[str, Any]) -> tuple[int, int, list[int]] | None:
    """``(step, live bytes, live buffer sizes largest first)`` at the arena's peak, if known."""
    plan = (report.get("arena") or {}).get("plan") or {}
    curve, buffers = plan.get("live_bytes_per_step") or [], plan.get("buffers") or []
    if not curve or not buffers:
        return None
    step = max(range(len(curve)), key=curve.__getitem__)
    sizes = sorted((b["size"] for b in buffers if b["first"] <= step <= b["last"]), reverse=True)
    return step, int(curve[step]), sizes


def ram_floor_note(report: Mapping[str, Any]) -> str:
    """What dominates the RAM of an exported (smallest) network and what to change.

    RAM = the arena + the application's input/output buffers. The input's bytes do not
    shrink with pruning: when the input and its copies at the arena's peak take most of the
    RAM limit, the note says so and asks for a smaller input; otherwise it names the largest
    activations at the peak.
    """
    ram = (report.get("budget") or {}).get("ram")
    peak = _peak(report)
    if ram is None or peak is None or ram["ok"]:
        return ""
    limit = ram["limit"]
    in_bytes, shapes = _input_bytes(report)
    step, live, sizes = peak
    aligned = -(-in_bytes // _ALIGN) * _ALIGN
    copies = sum(1 for s in sizes if s == aligned) if in_bytes else 0
    held = in_bytes * (1 + copies)  # the application's input buffer + copies in the arena
    largest = ", ".join(f"{s:,}" for s in sizes[:3])
    head = (
        f" RAM used {ram['used']:,} B of {limit:,} B ({ram.get('note', '')}); the arena peaks "
        f"at op {step} with {live:,} B live (largest tensors {largest} B)."
    )
    if held >= limit / 2:
        return head + (
            f" The input ({', '.join(shapes)}, {in_bytes:,} B) dominates: the input buffer and "
            f"{copies} cop{'y' if copies == 1 else 'ies'} of it live at that peak, {held:,} B "
            "that pruning cannot shrink. Use a smaller input: fewer pixels or frames (input "
            "bytes scale with frames x height x width x channels), e.g. --model-kw img_size=N "
            "with --data-kw size=N, or --model-kw frames=N with --data-kw chunk=N, or a board "
            "with more RAM."
        )
    return head + (
        " Even at minimum widths those activations exceed the RAM: use a smaller input "
        "(fewer pixels or frames) or a board with more RAM."
    )
