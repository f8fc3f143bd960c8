"""``fit.md`` and ``fit.html``: the candidates of ``tinyprune fit`` side by side, and the plot."""

from __future__ import annotations

import html
import io
from typing import Any

COLUMNS = ("criterion", "fits", "MACs kept", "MACs", "flash B", "arena B", "latency ms", "metric")


def _cells(row: dict[str, Any], key: str) -> list[str]:
    def num(v: Any, fmt: str = ",") -> str:
        return "-" if v is None else format(v, fmt)

    metric = row.get("metric", {}).get(key)
    return [
        row["criterion"],
        "yes" if row.get("fits") else "no",
        "-" if row.get("fraction") is None else f"{row['fraction']:.3f}",
        num(row.get("macs")),
        num(row.get("flash_bytes")),
        num(row.get("arena_bytes")),
        "-" if row.get("latency_ms") is None else f"{row['latency_ms']:.3g}",
        "-" if metric is None else f"{metric:.4g}",
    ]


def fit_markdown(result: dict[str, Any]) -> str:
    """The Pareto table, the winner and why each other candidate lost."""
    key = result["metric"]
    better = "higher" if result["higher_is_better"] else "lower"
    lines = [
        f"# Board fit: {result['target']}",
        "",
        f"Metric: {key} ({better} is better); dense network: "
        f"{result['dense'].get(key, float('nan')):.4g}.",
        "",
        "| " + " | ".join(COLUMNS) + " | verdict |",
        "|" + "---|" * (len(COLUMNS) + 1),
    ]
    for row in result["candidates"]:
        verdict = "chosen" if row["criterion"] == result["winner"] else row.get("lost", "")
        lines.append("| " + " | ".join(_cells(row, key)) + f" | {verdict} |")
    lines.append("")
    if result["winner"] is None:
        lines.append("No candidate fits: pick a larger board, a smaller model, or allow more loss.")
    else:
        exp = result.get("export", {})
        lines.append(
            f"Chosen: **{result['winner']}**, exported to `{exp.get('out_dir')}` "
            f"(flash {exp.get('flash_bytes', 0):,} B, arena {exp.get('arena_bytes', 0):,} B)."
        )
    return "\n".join(lines) + "\n"


def _plot_svg(result: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    key = result["metric"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in result["candidates"]:
        value = row.get("metric", {}).get(key)
        if row.get("macs") is None or value is None:
            continue
        marker = "*" if row["criterion"] == result["winner"] else "o"
        ax.scatter(row["macs"], value, marker=marker, s=120 if marker == "*" else 40)
        ax.annotate(
            row["criterion"], (row["macs"], value), textcoords="offset points", xytext=(4, 4)
        )
    if key in result["dense"]:
        ax.axhline(result["dense"][key], linestyle="--", linewidth=1, label="dense")
        ax.legend()
    ax.set_xlabel("MACs of the fitting network")
    ax.set_ylabel(key)
    ax.set_title(f"Candidates that fit {result['target']}")
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def fit_html(result: dict[str, Any]) -> str:
    """A self-contained page: the plot (inline SVG) and the table of :func:`fit_markdown`."""
    key = result["metric"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in (*COLUMNS, "verdict"))
    body = []
    for row in result["candidates"]:
        verdict = "chosen" if row["criterion"] == result["winner"] else row.get("lost", "")
        cells = "".join(f"<td>{html.escape(c)}</td>" for c in (*_cells(row, key), verdict))
        body.append(f"<tr>{cells}</tr>")
    title = html.escape(f"Board fit: {result['target']}")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;"
        "padding:4px 8px}table{border-collapse:collapse}</style></head><body>"
        f"<h1>{title}</h1>{_plot_svg(result)}<table><tr>{head}</tr>{''.join(body)}</table>"
        f"<p>Chosen: {html.escape(str(result['winner']))}</p></body></html>\n"
    )
