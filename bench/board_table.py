"""The Markdown table of bench/fit_bench.py: one block per task and board, over seeds."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

HEAD = (
    "| route | fits | MACs kept | metric (float) | metric (int8) | flash B | arena B "
    "| latency ms | trial exports |\n|---|---|---|---|---|---|---|---|---|"
)


def _ms(values: Sequence[float | None], fmt: str = ".3f") -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "-"
    if len(got) == 1:
        return format(got[0], fmt)
    return f"{np.mean(got):{fmt}} ± {np.std(got, ddof=1):{fmt}}"


def _mean(values: Sequence[float | None], fmt: str = ",.0f") -> str:
    got = [v for v in values if v is not None]
    return format(float(np.mean(got)), fmt) if got else "-"


def _candidates(cell: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [c for f in cell for c in f["fit"]["candidates"] if c["criterion"] == name]


def criterion_row(cell: list[dict[str, Any]], name: str, key: str) -> str:
    """One criterion over seeds: fitting seeds, fraction, metric, sizes of the fitting ones."""
    rows = _candidates(cell, name)
    ok = [r for r in rows if r.get("fits")]
    cols = [
        name,
        f"{len(ok)}/{len(rows)}",
        _mean([r.get("fraction") for r in ok], ".3f"),
        _ms([r.get("metric", {}).get(key) for r in ok]),
        "-",
        _mean([r.get("flash_bytes") for r in ok]),
        _mean([r.get("arena_bytes") for r in ok]),
        _mean([r.get("latency_ms") for r in ok], ".3g"),
        _mean([r.get("trial_exports") for r in rows], ".1f"),
    ]
    return "| " + " | ".join(cols) + " |"


def chosen_row(cell: list[dict[str, Any]], key: str) -> str:
    """The fit's chosen network over seeds (which criterion won how often)."""
    won = [f for f in cell if f["fit"]["winner"] is not None]
    names = Counter(f["fit"]["winner"] for f in won)
    label = "**chosen** (" + ", ".join(f"{n} x{k}" for n, k in names.most_common()) + ")"
    metric = [
        next(c for c in f["fit"]["candidates"] if c["criterion"] == f["fit"]["winner"])["metric"][
            key
        ]
        for f in won
    ]
    rep = [f["chosen_report"] for f in won]
    cols = [
        label,
        f"{len(won)}/{len(cell)}",
        "-",
        _ms(metric),
        _ms([f.get("chosen_int8") for f in won]),
        _mean([r["flash_bytes"] for r in rep]),
        _mean([r["arena_bytes"] for r in rep]),
        _mean([r["latency_ms"] for r in rep], ".3g"),
        "-",
    ]
    return "| " + " | ".join(cols) + " |"


def tfmot_row(cell: list[dict[str, Any]]) -> str:
    """The TF-MOT route at the chosen network's non-zero params."""
    rows = [f["tfmot"] for f in cell if "tfmot" in f]
    if not rows:
        return "| TF-MOT | - | - | - | - | - | - | - | - |"
    failed = [r for r in rows if "error" in r]
    if failed:
        sp = _mean([r["sparsity"] for r in failed], ".2f")
        why = "; ".join(sorted({r["error"] for r in failed}))
        return f"| TF-MOT (sparsity {sp}, PQAT): {len(failed)}/{len(rows)} not exported: {why} |"
    sp = _mean([r["sparsity"] for r in rows], ".2f")
    cols = [
        f"TF-MOT (sparsity {sp}, PQAT)",
        f"{sum(r['fits'] for r in rows)}/{len(rows)}",
        "1 (dense shape)",
        "-",
        _ms([r["metric"] for r in rows]),
        _mean([r["flash_bytes"] for r in rows]),
        _mean([r["arena_bytes"] for r in rows]),
        _mean([r["latency_ms"] for r in rows], ".3g"),
        "-",
    ]
    return "| " + " | ".join(cols) + " |"


def verdicts(cell: list[dict[str, Any]], criteria: Sequence[str], key: str) -> dict[str, Any]:
    """The issue's goal, per seed and on the means: chosen >= each criterion, >= TF-MOT."""
    higher = cell[0]["fit"]["higher_is_better"]

    def ge(a: float, b: float) -> bool:
        return a >= b if higher else a <= b

    per_seed, worse = 0, []
    for f in cell:
        w = f["fit"]["winner"]
        if w is None:
            continue
        best = next(c for c in f["fit"]["candidates"] if c["criterion"] == w)["metric"][key]
        others = [
            c["metric"][key] for c in f["fit"]["candidates"] if c.get("fits") and c.get("metric")
        ]
        per_seed += all(ge(best, o) for o in others)
    for name in criteria:
        ok = [r["metric"][key] for r in _candidates(cell, name) if r.get("fits")]
        if ok and not ge(float(np.mean(_chosen_float(cell, key))), float(np.mean(ok))):
            worse.append(name)
    tf_rows = [
        f
        for f in cell
        if "tfmot" in f and "error" not in f["tfmot"] and f.get("chosen_int8") is not None
    ]
    out = {"per_seed_best": f"{per_seed}/{len(cell)}", "mean_below": worse}
    if tf_rows:
        a = float(np.mean([f["chosen_int8"] for f in tf_rows]))
        b = float(np.mean([f["tfmot"]["metric"] for f in tf_rows]))
        fits = sum(f["tfmot"]["fits"] for f in tf_rows)
        out |= {"vs_tfmot": ge(a, b), "chosen_int8": a, "tfmot_int8": b, "tfmot_fits": fits}
    return out


def _chosen_float(cell: list[dict[str, Any]], key: str) -> list[float]:
    return [
        next(c for c in f["fit"]["candidates"] if c["criterion"] == f["fit"]["winner"])["metric"][
            key
        ]
        for f in cell
        if f["fit"]["winner"] is not None
    ]


def print_table(task: Any, board: str, cell: list[dict[str, Any]], criteria: Sequence[str]) -> None:
    """Print the block of one task on one board."""
    key = cell[0]["fit"]["metric"]
    secs = [f["seconds"] for f in cell]
    limit = "none" if task.latency_ms is None else f"{task.latency_ms:.4g} ms"
    print(
        f"\n### {task.name} ({task.model} {task.model_kw}) on {board}: metric {key}, "
        f"latency limit {limit}; fit time {_ms(secs, '.0f')} s"
    )
    print(HEAD)
    for name in criteria:
        print(criterion_row(cell, name, key))
    if any(f["fit"]["winner"] for f in cell):
        print(chosen_row(cell, key))
    print(tfmot_row(cell))
    v = verdicts(cell, criteria, key)
    line = (
        f"goal: chosen >= every fitting criterion on {v['per_seed_best']} seeds; "
        f"chosen's mean below a criterion's mean: {', '.join(v['mean_below']) or 'none'}"
    )
    if "vs_tfmot" in v:
        line += (
            f"; chosen int8 {v['chosen_int8']:.3f} vs TF-MOT int8 {v['tfmot_int8']:.3f}: "
            f"{'met' if v['vs_tfmot'] else 'NOT met'} (TF-MOT fits the board on "
            f"{v['tfmot_fits']}/{len([f for f in cell if 'tfmot' in f])} seeds)"
        )
    print(line)
