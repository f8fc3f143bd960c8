"""``tinyprune fit``: the most accurate network that fits a board, chosen across criteria.

Each criterion gets the same job as ``tinyprune prune --target PROFILE`` (train with its hook,
bisect the largest MACs fraction whose verified int8 export fits the profile's flash, RAM and
latency, prune, fine-tune, re-check the export), on a fresh copy of the same seeded network.
The fine-tuned metric picks the winner; a candidate also loses when its metric falls more than
``metric_drop`` below the dense network's. Each finished candidate is a run folder under
``OUT/candidates/<criterion>``: a re-run skips it (resumable). The winner is exported to
``OUT/export`` (``model_int8.tflite``, ``model_data.h/.cc``, ``report.*``), and the Pareto table
of every candidate is written to ``fit.json``, ``fit.md`` and ``fit.html``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from tinyprune.config import DataSpec, FitConfig, ModelSpec, PruneConfig
from tinyprune.errors import BudgetExceededError, ConfigError
from tinyprune.fileio import write_text_atomic

log = logging.getLogger(__name__)

#: Metric per task that picks the winner, and whether higher is better.
PRIMARY = {"classification": ("accuracy", True), "rppg": ("hr_mae", False)}


def fit_board(model: ModelSpec, data: DataSpec, cfg: FitConfig, out: str | Path) -> dict[str, Any]:
    """Run every criterion's board fit, pick the best, export it; return the ``fit.json`` dict.

    Under torchrun every replica trains each candidate together (DDP); rank 0 alone runs the
    trial exports, decides what is already done, copies the winner's export and writes the
    ``fit.*`` files, and every replica follows its answers.

    Raises:
        ConfigError: An unstructured criterion, bad profile, or no candidate fits at all.
    """
    from firmware_export.budget import load_profile
    from tinyprune import criteria
    from tinyprune.app.runs import check_out_dir
    from tinyprune.criteria.base import Unstructured
    from tinyprune.training import distributed
    from tinyprune.training.loop import progress_bar

    out = Path(out)
    check_out_dir(out)
    for name in cfg.criteria:
        if isinstance(criteria.get(name), Unstructured):
            msg = f"fit compares structured criteria; {name!r} is unstructured (no MACs budget)"
            raise ConfigError(msg)
    profile = load_profile(cfg.target)
    distributed.init_from_env()  # a no-op unless launched with torchrun
    target = distributed.on_rank0(lambda: _target(cfg, out, profile))
    with progress_bar(len(cfg.criteria) + 1, cfg.prune.progress, desc="fit", unit="run") as bar:
        bar.set_postfix_str("dense")
        dense = _dense_metric(model, data, cfg.prune, out)
        rows = []
        for name in cfg.criteria:
            bar.update()
            bar.set_postfix_str(name)
            rows.append(_candidate(model, data, name, target, cfg.prune, out))
        bar.update()
    result = choose(rows, dense, cfg.metric_drop)
    result |= {"target": str(cfg.target), "model": model.to_dict(), "data": data.to_dict()}
    return distributed.on_rank0(lambda: _finish(out, result, target))


def _finish(out: Path, result: dict[str, Any], target: str) -> dict[str, Any]:
    """Rank 0: the winner's export and the ``fit.*`` files."""
    if result["winner"] is not None:
        result["export"] = _export_winner(out, result["winner"], target)
    _write(out, result)
    return result


def _target(cfg: FitConfig, out: Path, profile: Any) -> str:
    """The profile to fit; with ``--latency-ms`` a copy of it that sets that limit."""
    if cfg.latency_ms is None:
        return str(cfg.target)
    if profile.cycles_per_mac is None:
        msg = f"--latency-ms needs a profile with cycles_per_mac; {profile.name} has none"
        raise ConfigError(msg)
    fields = dataclasses.asdict(profile) | {"latency_ms": float(cfg.latency_ms)}
    lines = [f"{k} = {json.dumps(v)}" for k, v in fields.items() if v not in (None, "")]
    lines = [ln for ln in lines if not ln.startswith("source ")]
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{profile.name}-latency.toml"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return str(path)


def _dense_metric(model: ModelSpec, data: DataSpec, cfg: PruneConfig, out: Path) -> dict[str, Any]:
    """Train the dense network with the candidates' budget once; its metric is the reference."""
    from tinyprune.app.train import train_run
    from tinyprune.config import TrainRunConfig
    from tinyprune.training import distributed

    run = out / "candidates" / "dense"
    if not distributed.on_rank0(lambda: (run / "summary.json").is_file()):
        tc = TrainRunConfig(
            epochs=max(1, cfg.epochs),
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            progress=cfg.progress,
        )
        train_run(model, data, tc, run)
    final = json.loads((run / "summary.json").read_text())["fit"].get("final", {})
    return {k.removeprefix("val_"): v for k, v in final.items() if k.startswith("val_")}


def _candidate(
    model: ModelSpec, data: DataSpec, name: str, target: str, cfg: PruneConfig, out: Path
) -> dict[str, Any]:
    """One criterion's board fit (a prune run with ``--target``); resumable."""
    from tinyprune.app.prune import prune_run
    from tinyprune.training import distributed

    run = out / "candidates" / name
    if distributed.on_rank0(lambda: (run / "summary.json").is_file()):  # all ranks agree
        log.info("fit: %s already done in %s", name, run)
        return _row(name, run, json.loads((run / "summary.json").read_text()))
    job = dataclasses.replace(
        cfg, target=target, target_flops=None, target_params=None, sparsity=None
    )
    try:
        prune_run(model, data, name, job, run)
    except BudgetExceededError as e:
        return {"criterion": name, "fits": False, "why": str(e)}
    return _row(name, run, json.loads((run / "summary.json").read_text()))


def _row(name: str, run: Path, data: dict[str, Any]) -> dict[str, Any]:
    from tinyprune.app.summary import PruneSummary

    summary = PruneSummary.from_json(data)
    t, metric, prune = summary.target or {}, summary.final_metric, summary.prune or {}
    macs = prune.get("macs_after", prune.get("macs_before"))
    return {
        "criterion": name,
        "fits": bool(t.get("fits", False)),
        "fraction": t.get("fraction"),
        "macs": macs,
        "flash_bytes": t.get("flash_bytes"),
        "arena_bytes": t.get("arena_bytes"),
        "latency_ms": t.get("latency_ms"),
        "metric": metric,
        "run": str(run),
        "trial_exports": len(t.get("tried", [])),
    }


def choose(
    rows: list[dict[str, Any]], dense: dict[str, Any], metric_drop: float | None
) -> dict[str, Any]:
    """Pick the fitting candidate with the best primary metric; say why each other one lost.

    The primary metric is accuracy (higher is better) or HR MAE in bpm (lower is better), else
    the waveform Pearson correlation (higher is better). Ties go to the earlier criterion.
    """
    key, higher = _primary(rows, dense)
    best: dict[str, Any] | None = None
    for row in rows:
        value = row.get("metric", {}).get(key) if row.get("fits") else None
        if not row.get("fits"):
            row["lost"] = row.get("why") or "does not fit the target"
        elif value is None:
            row["lost"] = f"no {key} metric"
        elif (
            metric_drop is not None
            and key in dense
            and _drop(dense[key], value, higher) > metric_drop
        ):
            row["lost"] = (
                f"{key} {value:.4g} is more than {metric_drop:g} below dense {dense[key]:.4g}"
            )
        elif best is None or _better(value, best["metric"][key], higher):
            best = row
    for row in rows:
        if row is not best and "lost" not in row and best is not None:
            row["lost"] = (
                f"{key} {row['metric'][key]:.4g} vs {best['metric'][key]:.4g} ({best['criterion']})"
            )
    return {
        "metric": key,
        "higher_is_better": higher,
        "dense": dense,
        "candidates": rows,
        "winner": best["criterion"] if best else None,
        "winner_run": best["run"] if best else None,
    }


def _primary(rows: list[dict[str, Any]], dense: dict[str, Any]) -> tuple[str, bool]:
    seen = set(dense) | {k for r in rows for k in r.get("metric", {})}
    for key, higher in (("accuracy", True), ("hr_mae", False), ("pearson", True)):
        if key in seen:
            return key, higher
    msg = f"no metric to compare candidates by (saw {sorted(seen)})"
    raise ConfigError(msg)


def _drop(dense: float, value: float, higher: bool) -> float:
    return dense - value if higher else value - dense


def _better(a: float, b: float, higher: bool) -> bool:
    return a > b if higher else a < b


def _export_winner(out: Path, winner: str, target: str) -> dict[str, Any]:
    """The chosen network's export in ``OUT/export`` (the fixed artifact names).

    The candidate's own final check (``candidates/<winner>/export``, the same model, profile and
    options) is copied; a candidate run without it (an older run) is exported again.
    """
    import shutil

    from firmware_export.report_schema import ExportReport

    run, dest = out / "candidates" / winner, out / "export"
    if (run / "export" / "report.json").is_file():
        shutil.copytree(run / "export", dest, dirs_exist_ok=True)
    else:
        from firmware_export import export
        from tinyprune.app.sources import load_model

        export(load_model(str(run / "pruned.pt2")), run / "calib.npy", target=target, out_dir=dest)
    rep = ExportReport.load(dest)
    return {
        "out_dir": str(dest),
        "flash_bytes": rep.flash_bytes,
        "arena_bytes": rep.arena_bytes,
        "fits": rep.fits,
    }


def _write(out: Path, result: dict[str, Any]) -> None:
    from tinyprune.app.board_report import fit_html, fit_markdown

    write_text_atomic(out / "fit.json", json.dumps(result, indent=2, default=str) + "\n")
    write_text_atomic(out / "fit.md", fit_markdown(result))
    write_text_atomic(out / "fit.html", fit_html(result))
