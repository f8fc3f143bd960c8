"""The run's report: ``report.json`` for scripts, ``report.md`` and ``report.html`` for people.

One dict (built by :func:`build_report_dict`) carries every figure; the Markdown and HTML
views render that dict plus the per-layer analysis, and the terminal summary reads the dict
alone, so the three can never disagree. Files are written atomically (temp file + rename)
so that a build script never reads half a report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_export.analyze import LayerRow, LintIssue, ModelAnalysis
from firmware_export.budget import BudgetReport, DeviceProfile
from firmware_export.report_memory import arena_rows, memory_svg, tail_table
from firmware_export.report_schema import REPORT_SCHEMA_VERSION, ExportReport
from firmware_export.tflite_model import TensorInfo
from tinyprune.fileio import write_text_atomic

REPORT_FILES = ("report.json", "report.md", "report.html")


def _tensor_dict(t: TensorInfo) -> dict[str, Any]:
    return {
        "name": t.name,
        "shape": list(t.shape),
        "dtype": t.dtype,
        "scale": list(t.scale),
        "zero_point": list(t.zero_point),
    }


def _layer_dict(r: LayerRow) -> dict[str, Any]:
    return {
        "index": r.index,
        "op": r.op,
        "name": r.name,
        "torch_layer": r.torch_layer,
        "input_shapes": [list(s) for s in r.input_shapes],
        "output_shapes": [list(s) for s in r.output_shapes],
        "macs": r.macs,
        "nonzero_macs": r.nonzero_macs,
        "params": r.params,
        "nonzero_params": r.nonzero_params,
        "activation_bytes": r.activation_bytes,
    }


def _analysis_figures(analysis: ModelAnalysis) -> dict[str, Any]:
    return {
        "activation_lower_bound_bytes": analysis.activation_lower_bound_bytes,
        "macs": analysis.macs,
        "flops": 2 * analysis.macs,
        "nonzero_macs": analysis.nonzero_macs,
        "params": analysis.params,
        "nonzero_params": analysis.nonzero_params,
        "density": analysis.density,
        "ops": dict(analysis.ops),
        "inputs": [_tensor_dict(t) for t in analysis.inputs],
        "outputs": [_tensor_dict(t) for t in analysis.outputs],
    }


@dataclass(frozen=True)
class ReportArena:
    """The arena figures of a report.

    Attributes:
        bytes: Smallest arena in which TFLM ran the model on this host (measured).
        margin_bytes: Margin added in the header's arena constant.
        margin_reason: Why that margin (32-bit pointers, optimized kernels' scratch).
        header_bytes: The header's arena constant when it is computed for the target
            (32-bit head + tail + scratch + margin); default ``bytes + margin_bytes``.
    """

    bytes: int
    margin_bytes: int
    margin_reason: str
    header_bytes: int | None = None


def build_report_dict(
    *,
    analysis: ModelAnalysis,
    budget: BudgetReport,
    profile: DeviceProfile,
    arena: ReportArena,
    verify: Mapping[str, Any],
    lint: Iterable[LintIssue] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble ``report.json``'s content.

    Args:
        analysis: the static analysis of the int8 model.
        budget: the budget check against ``profile``.
        profile: the target.
        arena: the measured arena, its margin and the header's constant.
        verify: per comparison, its figure and tolerance (from firmware_export.verify).
        lint: quantization issues found by :func:`firmware_export.analyze.lint_int8`.
        extra: more metadata (tinyprune version, sha256, criterion, ...); merged first, so
            a key of the same name as a figure above never replaces that figure.

    Returns:
        A JSON-serialisable dict with at least flash_bytes, arena_bytes, macs, params, ops,
        budget ({resource: {used, limit, ok, ...}}) and verify.
    """
    report: dict[str, Any] = dict(extra or {})
    report.update(
        {
            "schema_version": REPORT_SCHEMA_VERSION,
            "target": {
                "name": profile.name,
                "runtime": profile.runtime,
                "description": profile.description,
                "source": profile.source,
            },
            "flash_bytes": analysis.model_bytes,
            "arena_bytes": arena.bytes,
            "arena_margin_bytes": arena.margin_bytes,
            "arena_margin_reason": arena.margin_reason,
            "arena_header_bytes": (
                arena.bytes + arena.margin_bytes
                if arena.header_bytes is None
                else arena.header_bytes
            ),
            **_analysis_figures(analysis),
            "budget": budget.to_dict(),
            "budget_ok": budget.ok,
            "verify": dict(verify),
            "layers": [_layer_dict(r) for r in analysis.layers],
            "lint": [
                {"severity": i.severity, "tensor": i.tensor, "op": i.op, "message": i.message}
                for i in lint
            ],
        }
    )
    return report


def _plain(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become strings, numpy scalars plain numbers."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalar or array
        return _plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if math.isfinite(value) and abs(value) < 1e6 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def _shapes(shapes: tuple[tuple[int, ...], ...]) -> str:
    return " ".join("x".join(str(d) for d in s) or "scalar" for s in shapes)


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """One line per budget row plus a verdict, for the terminal."""
    lines = []
    for resource, row in report.get("budget", {}).items():
        unit = row.get("unit", "")
        mark = "ok  " if row.get("ok") else "OVER"
        est = " (estimate)" if row.get("estimate") else ""
        lines.append(
            f"{mark} {resource:<8} {_fmt(row.get('used'))} / {_fmt(row.get('limit'))} {unit}{est}"
        )
    latency = report.get("latency_estimate")
    if latency and "latency" not in report.get("budget", {}):
        lines.append(
            f"info latency  ~{latency['ms']:.3g} ms per inference (estimate: {latency['formula']})"
        )
    target = report.get("target", {}).get("name", "the target")
    failing = [k for k, r in report.get("budget", {}).items() if not r.get("ok")]
    verdict = f"fits {target}" if not failing else f"OVER BUDGET on {target}: {', '.join(failing)}"
    lines.append(f"verdict: {verdict}")
    return lines


Table = tuple[list[str], list[list[str]]]


def _tables(report: Mapping[str, Any], analysis: ModelAnalysis) -> dict[str, Table]:
    """Every table of the report as (header, rows) of strings, shared by Markdown and HTML."""
    summary = [
        ["target", f"{report['target']['name']} ({report['target']['runtime']})"],
        ["model (flash) bytes", _fmt(report["flash_bytes"])],
        ["arena bytes (measured on host)", _fmt(report["arena_bytes"])],
        [
            "arena margin bytes",
            f"{_fmt(report['arena_margin_bytes'])} ({report['arena_margin_reason']})",
        ],
        *arena_rows(report),
        ["activation lower bound bytes", _fmt(report["activation_lower_bound_bytes"])],
        ["MACs (FLOPs = 2 x MACs)", _fmt(report["macs"])],
        ["non-zero MACs", _fmt(report["nonzero_macs"])],
        ["params / non-zero", f"{_fmt(report['params'])} / {_fmt(report['nonzero_params'])}"],
        ["ops", ", ".join(f"{k} x{v}" for k, v in sorted(report["ops"].items()))],
    ]
    budget = [
        [
            k,
            _fmt(r["used"]),
            _fmt(r["limit"]),
            r.get("unit", ""),
            _fmt(bool(r["ok"])),
            "estimate" if r.get("estimate") else "measured",
            r.get("note", ""),
        ]
        for k, r in report["budget"].items()
    ]
    verify = _verify_rows(report.get("verify", {}))
    layers = [
        [
            str(r.index),
            r.op,
            r.torch_layer or r.name,
            _shapes(r.input_shapes),
            _shapes(r.output_shapes),
            _fmt(r.macs),
            _fmt(r.nonzero_macs),
            _fmt(r.params),
            _fmt(r.nonzero_params),
            _fmt(r.activation_bytes),
        ]
        for r in analysis.layers
    ]
    lint = [
        [i["severity"], i.get("layer") or i["tensor"], i["op"], i["message"]]
        for i in report.get("lint", [])
    ]
    return {
        "Summary": (["figure", "value"], summary),
        "Budget": (["resource", "used", "limit", "unit", "ok", "kind", "note"], budget),
        "Verification": verify,
        "Arena tail and scratch": tail_table(report),
        "Quantization lint": (["severity", "layer (else tensor)", "op", "message"], lint),
        "Layers": (
            [
                "#",
                "op",
                "PyTorch layer (else output tensor)",
                "input shapes",
                "output shapes",
                "MACs",
                "non-zero MACs",
                "params",
                "non-zero params",
                "activation bytes",
            ],
            layers,
        ),
    }


def _verify_rows(verify: Mapping[str, Any]) -> Table:
    """One row per comparison (worst over the outputs), plus one per output when there are
    several (``int8_vs_float [out1]``).
    """
    entries: list[tuple[str, Mapping[str, Any]]] = []
    for name, value in verify.items():
        value = value if isinstance(value, Mapping) else {"value": value}
        entries.append((name, {k: x for k, x in value.items() if k != "outputs"}))
        per_output = value.get("outputs") or []
        if len(per_output) > 1:
            entries += [
                (f"{name} [{row.get('label', i)}]", row) for i, row in enumerate(per_output)
            ]
    keys: list[str] = []
    for _, value in entries:
        for k in value:
            if k not in keys and k not in ("index", "label"):
                keys.append(k)
    rows = [[name] + [_cell(value, k) for k in keys] for name, value in entries]
    return ["comparison", *keys], rows


def _cell(value: Mapping[str, Any], key: str) -> str:
    if key not in value:
        return ""
    if key == "closer_to_float":
        return ", ".join(f"{r['label']}: {r['closer']}" for r in value[key])
    return _fmt(value[key])


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["(none)"]
    esc = [[c.replace("|", "\\|") for c in row] for row in [header, *rows]]
    return [
        "| " + " | ".join(esc[0]) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in esc[1:]),
    ]


def render_markdown(report: Mapping[str, Any], analysis: ModelAnalysis) -> str:
    """The Markdown report (summary, budget, verification, lint, per-layer table)."""
    lines = [
        f"# tinyprune report: {report['target']['name']}",
        "",
        *(f"    {s}" for s in summary_lines(report)),
        "",
    ]
    for title, (header, rows) in _tables(report, analysis).items():
        lines += [f"## {title}", "", *_md_table(header, rows), ""]
    return "\n".join(lines)


def layer_plot_png(analysis: ModelAnalysis) -> bytes:
    """PNG of MACs and activation bytes per layer (matplotlib, Agg backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = [f"{r.index}:{r.op}" for r in analysis.layers]
    fig = Figure(figsize=(max(6.0, 0.35 * len(labels) + 2), 5.5), dpi=90)
    FigureCanvasAgg(fig)
    ax_macs, ax_act = fig.subplots(2, 1, sharex=True)
    xs = range(len(labels))
    ax_macs.bar(xs, [r.macs for r in analysis.layers], color="#3b6ea8", label="dense")
    ax_macs.bar(
        xs, [r.nonzero_macs for r in analysis.layers], color="#e0a030", width=0.4, label="non-zero"
    )
    ax_macs.set_ylabel("MACs")
    ax_macs.legend(loc="upper right", fontsize=8)
    ax_act.bar(xs, [r.activation_bytes for r in analysis.layers], color="#5a9a5a")
    ax_act.set_ylabel("activation bytes")
    ax_act.set_xticks(list(xs), labels, rotation=60, ha="right", fontsize=7)
    fig.suptitle("Per layer: MACs and output activation bytes")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def render_html(report: Mapping[str, Any], analysis: ModelAnalysis) -> str:
    """Self-contained HTML report with the per-layer plot embedded as a base64 PNG."""
    e = html.escape
    png = base64.b64encode(layer_plot_png(analysis)).decode("ascii")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>tinyprune report: {e(report['target']['name'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "margin-bottom:1.5em}td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}"
        "th{background:#eee}.bad{color:#b00;font-weight:bold}</style></head><body>",
        f"<h1>tinyprune report: {e(report['target']['name'])}</h1>",
        "<pre>" + e("\n".join(summary_lines(report))) + "</pre>",
    ]
    for title, (header, rows) in _tables(report, analysis).items():
        parts.append(f"<h2>{e(title)}</h2>")
        if not rows:
            parts.append("<p>(none)</p>")
            continue
        parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        for row in rows:
            cells = "".join(
                f'<td class="bad">{e(c)}</td>' if c == "NO" else f"<td>{e(c)}</td>" for c in row
            )
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</table>")
    svg = memory_svg(report)
    if svg:
        parts += ["<h2>Arena per op step</h2>", svg]
    parts += [
        "<h2>Per-layer plot</h2>",
        f'<img alt="MACs and activation bytes per layer" src="data:image/png;base64,{png}">',
        "</body></html>",
        "",
    ]
    return "\n".join(parts)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder and a rename."""
    write_text_atomic(path, text)


def write_reports(
    out_dir: str | Path, report: Mapping[str, Any], analysis: ModelAnalysis, budget: BudgetReport
) -> list[Path]:
    """Write report.json, report.md and report.html into ``out_dir``.

    Args:
        out_dir: the run folder (created if missing).
        report: the dict from :func:`build_report_dict`.
        analysis: the per-layer analysis rendered in the tables and the plot.
        budget: the budget check; its rows replace ``report["budget"]`` so they cannot differ.

    Returns:
        The three paths, in the order json, md, html.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plain = _plain({**report, "budget": budget.to_dict(), "budget_ok": budget.ok})
    data = ExportReport.from_dict(plain).to_dict()  # a report missing a contract figure fails
    texts = (
        json.dumps(data, indent=2, allow_nan=False) + "\n",
        render_markdown(data, analysis),
        render_html(data, analysis),
    )
    paths = [out / name for name in REPORT_FILES]
    for path, text in zip(paths, texts, strict=True):
        write_atomic(path, text)
    return paths
