"""The arena in the report: its figures, the tail table, and the per-step memory picture.

The picture (inline SVG, no dependency) shows, per op step, the live tensor bytes (the
lower-bound curve: no plan can be lower at that step) and the planned buffers as bars
over their lifetimes at their arena offsets, so the step that sets the peak, and the
tensors live there, can be read off: those are the layers to prune for RAM.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

Table = tuple[list[str], list[list[str]]]

_W, _H, _PAD = 760, 300, 50


def _plan(report: Mapping[str, Any]) -> Mapping[str, Any] | None:
    arena = report.get("arena") or {}
    return arena.get("plan")


def arena_rows(report: Mapping[str, Any]) -> list[list[str]]:
    """Summary rows: the header constant and what it is for, heads, bound, tail, scratch."""
    p = _plan(report)
    header = report.get("arena_header_bytes")
    if p is None:
        return [["arena bytes in the header", f"{header} (analytical lower bound + margin)"]]
    smallest = p["smallest_planned_bytes"]
    return [
        [
            "arena bytes in the header",
            f"{header} = head {p['offline_head_bytes' if p['embedded'] else 'online_head_bytes']}"
            f" ({p['header_is_for']}) + scratch {p['device_head_bytes'] - _head(p)} "
            f"(CMSIS-NN {p['cmsis_nn_isa']}) + 32-bit tail {p['tail_32bit_bytes']} + margin "
            f"{report.get('arena_margin_bytes', 0)}",
        ],
        [
            "tensor head: online / offline / lower bound",
            f"{p['online_head_bytes']} / {p['offline_head_bytes']} / {p['lower_bound_bytes']} "
            f"({p['plan_method']}{', proven optimal' if p['proven_optimal'] else ''}; "
            f"offline plan {'embedded' if p['embedded'] else 'not embedded'}, "
            f"--memory-plan {p['mode']})",
        ],
        [
            "smallest host arena: online / planned",
            f"{p['smallest_online_bytes']} / {smallest if smallest is not None else '-'}",
        ],
        ["tail bytes: host / 32-bit", f"{p['tail_host_bytes']} / {p['tail_32bit_bytes']}"],
    ]


def _head(p: Mapping[str, Any]) -> int:
    return int(p["offline_head_bytes"] if p["embedded"] else p["online_head_bytes"])


def tail_table(report: Mapping[str, Any]) -> Table:
    """The persistent tail per allocation type, host beside 32-bit, plus CMSIS-NN scratch."""
    p = _plan(report)
    rows: list[list[str]] = []
    if p is not None:
        for t in p["tail_items"]:
            rows.append(
                [t["kind"], str(t["count"]), str(t["host_bytes"]), str(t["bytes_32bit"]), t["how"]]
            )
        for op, size in p["scratch_bytes"].items():
            rows.append([f"CMSIS-NN scratch, op {op}", "1", "0", str(size), p["cmsis_nn_isa"]])
    return ["item", "count", "host bytes", "32-bit bytes", "how"], rows


def memory_svg(report: Mapping[str, Any]) -> str:
    """Inline SVG: live bytes per op step and the planned buffers as bars ('' without a plan)."""
    p = _plan(report)
    if p is None or not p["live_bytes_per_step"]:
        return ""
    curve, bufs = p["live_bytes_per_step"], p["buffers"]
    steps = len(curve)
    top: float = max([*curve, p["online_head_bytes"], _head(p), 1])
    sx = (_W - 2 * _PAD) / steps
    sy = (_H - 2 * _PAD) / top

    def y(v: float) -> float:
        return _H - _PAD - v * sy

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect x="{_PAD}" y="{_PAD}" width="{_W - 2 * _PAD}" height="{_H - 2 * _PAD}" '
        'fill="none" stroke="#999"/>',
    ]
    for b in bufs:
        x0, x1 = _PAD + b["first"] * sx, _PAD + min(b["last"] + 1, steps) * sx
        tip = html.escape(
            f"tensor {b['tensor']}: {b['size']} B at {b['offset']}, steps {b['first']}-{b['last']}"
        )
        out.append(
            f'<rect x="{x0:.1f}" y="{y(b["offset"] + b["size"]):.1f}" width="{x1 - x0:.1f}" '
            f'height="{b["size"] * sy:.1f}" fill="#8fb3d9" stroke="#2d5d8f" stroke-width="0.5">'
            f"<title>{tip}</title></rect>"
        )
    pts = " ".join(
        f"{_PAD + s * sx:.1f},{y(v):.1f} {_PAD + (s + 1) * sx:.1f},{y(v):.1f}"
        for s, v in enumerate(curve)
    )
    out.append(f'<polyline points="{pts}" fill="none" stroke="#c0392b" stroke-width="2"/>')
    for value, label, color in (
        (p["online_head_bytes"], "TFLM online head", "#777"),
        (p["lower_bound_bytes"], "lower bound", "#c0392b"),
    ):
        out.append(
            f'<line x1="{_PAD}" x2="{_W - _PAD}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            f'stroke="{color}" stroke-dasharray="4 3"/>'
            f'<text x="{_W - _PAD + 2}" y="{y(value) + 4:.1f}" fill="{color}">{value}</text>'
            f'<text x="{_PAD + 4}" y="{y(value) - 3:.1f}" fill="{color}">{label}</text>'
        )
    out.append(
        f'<text x="{_W / 2:.0f}" y="{_H - 15}" text-anchor="middle">op step (execution order); '
        "bars: planned buffers at their arena offsets; red: live bytes</text>"
    )
    out.append(f'<text x="{_PAD}" y="{_PAD - 8}">arena offset / bytes (0 at the bottom)</text>')
    out.append("</svg>")
    return "\n".join(out)
