"""Arena figures of the export bench's memory table (``export_bench.py --memory``).

For each model: convert with tinyprune's own stages (ONNX -> SavedModel -> full int8), then
:func:`firmware_export.arena_plan.plan_arena` (TFLM's greedy head, the optimal offline head,
the lower bound, the host and 32-bit tails, the smallest arena online and with the embedded
plan, both by bisection on the host TFLM).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PROFILE = "cortex-m7"


def seeded_model(name: str, **kw: Any) -> Callable[[], Any]:
    """A factory of the zoo model ``name`` (options ``kw``), built under seed 0, in eval mode."""

    def make() -> Any:
        import torch

        from tinyprune.models import create_model

        torch.manual_seed(0)
        return create_model(name, **kw).eval()

    return make


def memory_cases() -> dict[str, tuple[Callable[[], Any], tuple[int, ...]]]:
    """Name -> (seeded factory, per-sample PyTorch input shape)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from tiny_cnn import build as tiny_cnn

    from tinyprune.models import get_model_spec

    def zoo(name: str) -> tuple[Callable[[], Any], tuple[int, ...]]:
        return seeded_model(name), tuple(get_model_spec(name).input_shape)

    return {
        "tiny_cnn": (tiny_cnn, (1, 16, 16)),
        "resnet20_w8": (seeded_model("resnet20", width=8, input_size=32), (3, 32, 32)),
        "resnet20_w16": (seeded_model("resnet20", width=16, input_size=32), (3, 32, 32)),
        "mobilenetv2_x035": (
            seeded_model("mobilenetv2", num_classes=10, width_mult=0.35, input_size=32),
            (3, 32, 32),
        ),
        "ds_cnn": zoo("ds_cnn"),
        "deepphys": zoo("deepphys"),
        "tscan": zoo("tscan"),
    }


def int8_model(name: str, cache: Path | None) -> bytes:
    """The case's int8 ``.tflite`` (read from ``cache/NAME.tflite`` when present)."""
    if cache is not None and (cache / f"{name}.tflite").is_file():
        return (cache / f"{name}.tflite").read_bytes()
    from firmware_export import calibration as cio
    from firmware_export.convert import convert_to_saved_model
    from firmware_export.export_onnx import export_onnx
    from firmware_export.quantize import quantize_int8

    build, shape = memory_cases()[name]
    x = np.random.default_rng(0).standard_normal((16, *shape)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        export_onnx(build(), x[0], work / "m.onnx")
        cl = cio.to_channels_last(x)
        convert_to_saved_model(work / "m.onnx", work / "sm", cl)
        data = quantize_int8(work / "sm", cl, per_channel=True)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        (cache / f"{name}.tflite").write_bytes(data)
    return data


def memory_row(name: str, cache: Path | None) -> dict[str, Any]:
    """Arena figures of one case (bytes)."""
    from firmware_export.arena_plan import plan_arena
    from firmware_export.arena_tail import head_and_tail

    p = plan_arena(int8_model(name, cache), "offline", PROFILE)
    planned = p.measured_planned
    assert planned is not None
    _, tail_planned = head_and_tail(planned.allocations)
    return {
        "online_head": p.online_head,
        "offline_head": p.offline_head,
        "lower": p.lower_bound,
        "method": p.plan_method,
        "tail_host": tail_planned,
        "tail_32": p.tail_32bit,
        "smallest_online": p.measured_online.smallest_bytes,
        "smallest_planned": planned.smallest_bytes,
        "device": p.device_bytes,
    }


def render_memory(rows: dict[str, dict[str, Any] | str]) -> str:
    """Markdown table of :func:`memory_row` results."""
    head = (
        "| model | online head | offline head | lower bound | plan | tail host | tail 32-bit "
        "| smallest online | smallest planned | saving | planned / (bound + tail) "
        f"| header ({PROFILE}) |"
    )
    lines = [head, "|" + "---|" * 12]
    for name, r in rows.items():
        if isinstance(r, str):
            lines.append(f"| {name} | error: {r} |" + " |" * 10)
            continue
        saving = r["smallest_online"] - r["smallest_planned"]
        lines.append(
            f"| {name} | {r['online_head']:,} | {r['offline_head']:,} | {r['lower']:,} | "
            f"{r['method']} | {r['tail_host']:,} | {r['tail_32']:,} | "
            f"{r['smallest_online']:,} | {r['smallest_planned']:,} | "
            f"{saving:,} ({saving / r['smallest_online']:.1%}) | "
            f"{r['smallest_planned'] / (r['lower'] + r['tail_host']):.3f} | {r['device']:,} |"
        )
    return "\n".join(lines)


def row_from_report(plan: dict[str, Any]) -> dict[str, Any]:
    """:func:`memory_row`'s figures from an export report's ``arena.plan`` (auto mode: the
    planned figure is the online one when nothing was embedded)."""
    planned = plan["smallest_planned_bytes"] or plan["smallest_online_bytes"]
    return {
        "online_head": plan["online_head_bytes"],
        "offline_head": plan["offline_head_bytes"],
        "lower": plan["lower_bound_bytes"],
        "method": plan["plan_method"] + ("" if plan["embedded"] else " (not embedded)"),
        "tail_host": plan["tail_host_bytes"],
        "tail_32": plan["tail_32bit_bytes"],
        "smallest_online": plan["smallest_online_bytes"],
        "smallest_planned": planned,
        "device": plan["device_bytes"],
    }
