"""Benchmark of the structured criteria against the baselines at equal budgets.

Every criterion (l1, random, bn_scale, pcc_ci, tailored, cluster_de; and ``pcc_ci:uniform``,
pcc_ci with ``mode=uniform_budget``, not counted in the targets) prunes the same network
to the same MACs budgets (50 % and 25 % kept) with the same training budget (pre-training
epochs + fine-tuning epochs), over several seeds, on

* (a) ``micro_cnn`` (width 16) on scikit-learn's handwritten digits (accuracy), and
* (b) ``physnet_2p1d`` (TFLM-native, small widths) on synthetic rPPG clips (HR MAE in bpm over
  held-out subjects' 17 s videos, HR per video as in the rPPG toolbox), and
* (c) ``tscan`` and (d) ``efficientphys`` (temporal shift and attention masks; 32 frames at
  16x16, width 8) on the same synthetic rPPG clips and metric (``--tasks`` picks tasks).

Every criterion prunes without fine-tuning inside the job; the bench measures the metric right
after pruning ("pruned", BatchNorm statistics re-estimated on 256 training images as the prune
job does), fine-tunes with the same budget for all (a tenth of the training learning rate by
default, the usual pruning recipe; ``--finetune-lr-scale 1`` re-trains at the full rate), and
measures again; verdicts are printed for both stages. The
``dense`` row is the trained, unpruned network. Verdicts against ``random`` and ``l1`` are
paired by seed (same data and initialisation).

Criteria without a training hook (l1, random, bn_scale, cluster_de) share one pre-trained
network per seed; pcc_ci pre-trains with its PCC loss; tailored trains with its integrated
pruning hook (then ``freeze_``), so its training is per budget. Each pruned model of seed 0 is
exported to int8 for a Cortex-M7 (flash and arena are printed).

Modes: default (~13 min on 2 cores), ``--quick`` (1-minute smoke), ``--full`` (larger grid and
the DE settings of docs/methods.md §4.6), ``--de-timing`` (DE search time on resnet20/vgg16_cifar
with CIFAR-shaped random data), ``--vgg`` (VGG-16 pcc_ci operating point, int8, TFLM).

    python bench/criteria_bench.py [--quick | --full] [--de-timing] [--vgg] [--no-export]
        [--tasks tscan,efficientphys]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

CRITERIA = ("l1", "random", "bn_scale", "pcc_ci", "tailored", "cluster_de")
SEED_CRITERIA = ("pcc_ci", "tailored", "cluster_de")
# extra rows: a criterion with non-default options (not counted in the targets)
VARIANTS = {"pcc_ci:uniform": ("pcc_ci", {"mode": "uniform_budget"})}
ROWS = (*CRITERIA, *VARIANTS)


@dataclass(frozen=True)
class Task:
    """One benchmark network + data set + training budget."""

    name: str
    model: str
    model_kwargs: dict[str, Any]
    metric: str  # key of the evaluation dict
    higher_is_better: bool
    epochs: int
    finetune_epochs: int
    lr: float
    batch_size: int
    data_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_kwargs: dict[str, Any] = field(default_factory=dict)  # rPPG: long held-out videos
    # per-criterion options of this task (merged under a variant's own options)
    criterion_options: dict[str, dict[str, Any]] = field(default_factory=dict)


TEST_VIDEOS = {"quick": 6, "default": 48, "full": 96}


def _tasks(mode: str, test_videos: int | None = None) -> list[Task]:
    """The two tasks; ``test_videos`` held-out rPPG videos (default: ``TEST_VIDEOS[mode]``)."""
    scale = {"quick": 0.25, "default": 1.0, "full": 2.0}[mode]

    def ep(n: int) -> int:
        return max(1, round(n * scale))

    digits = Task(
        "digits/micro_cnn", "micro_cnn", {"width": 16}, "accuracy", True, ep(16), ep(6), 3e-3, 32
    )
    frames, size = 64, 16
    n_train = {"quick": 6, "default": 12, "full": 24}[mode]
    rppg = Task(
        "rppg/physnet_2p1d",
        "physnet_2p1d",
        {"frames": frames, "img_size": size, "width": 8},
        "hr_mae",
        False,
        ep(12),
        ep(6),
        3e-3,
        4,
        {
            "n_train": n_train,
            "n_val": 2,
            "n_test": 2,
            "clips_per_video": 2,
            "size": size,
            "chunk": frames,
            "real_ppg": False,
        },
        {"n_test": test_videos or TEST_VIDEOS[mode], "clips_per_video": 8},
    )
    return [digits, rppg, *_shift_tasks(mode, rppg)]


def _shift_tasks(mode: str, base: Task) -> list[Task]:
    """TS-CAN and EfficientPhys-C (temporal shift + attention masks, issue 17) on the same
    synthetic rPPG clips as ``base``, 32 frames per clip at 16x16, width 8.

    pcc_ci's own floor, ``max(8, 5 % of C)`` channels per layer (docs/methods.md §3), is the
    whole width of these nets' first layers, so pcc_ci runs here at the engine's floor
    (``min_channels=1``; the table says so).
    """
    frames = 32
    net_kw = {"frames": frames, "img_size": 16, "width": 8, "hidden": 32}
    out = []
    for name, types in (
        ("tscan", ("DiffNormalized", "Standardized")),
        ("efficientphys", ("Standardized",)),
    ):
        data = base.data_kwargs | {"chunk": frames, "data_types": types}
        out.append(
            dataclasses.replace(
                base,
                name=f"rppg/{name}",
                model=name,
                model_kwargs=net_kw,
                data_kwargs=data,
                criterion_options={"pcc_ci": {"min_channels": 1}},
            )
        )
    return out


def _bundle(task: Task) -> Any:
    """The task's data; rPPG clips are frame-stacked to the model's (C, T*H, W) layout."""
    from tinyprune.data import build_dataset
    from tinyprune.data.bundle import ArrayDataset

    if task.metric == "accuracy":
        return build_dataset("digits")
    b = build_dataset("synthetic-rppg", **task.data_kwargs)
    c, t, h, w = b.input_shape

    def stack(ds: Any) -> ArrayDataset:
        return ArrayDataset(ds.x.reshape(len(ds.x), c, t * h, w), ds.y)

    return dataclasses.replace(
        b, train=stack(b.train), val=stack(b.val), test=stack(b.test), input_shape=(c, t * h, w)
    )


def _eval_videos(task: Task) -> Any:
    """rPPG: held-out subjects' 17 s videos (HR is taken per video, as the rPPG toolbox does:
    a 64-frame clip is 2 s, too short for an FFT heart rate); None for classification."""
    from tinyprune.data import build_dataset

    if task.metric == "accuracy":
        return None
    kw = task.data_kwargs | {"n_train": 1, "n_val": 1} | task.eval_kwargs
    return build_dataset("synthetic-rppg", **kw)


def _metric(task: Task, model: torch.nn.Module, bundle: Any, videos: Any) -> float:
    """Test accuracy (digits) or HR MAE in bpm over held-out videos (rPPG)."""
    from tinyprune.app.runs import to_model_layout
    from tinyprune.app.tasks import task_metric
    from tinyprune.metrics import mae, video_hr
    from tinyprune.training import evaluate

    if videos is None:
        loaders = bundle.loaders(batch_size=256, seed=0)
        return float(evaluate(model, loaders.test, task_metric("classification"))["accuracy"])
    x = to_model_layout(videos.test.x, model)
    model.eval()
    with torch.no_grad():
        bvp = np.concatenate(
            [model(torch.from_numpy(x[i : i + 16])).numpy() for i in range(0, len(x), 16)]
        )
    return mae(*video_hr(bvp, videos.test.video, videos.test.hr_bpm, videos.fs))


def _finetune(model: torch.nn.Module, bundle: Any, s: Any) -> None:
    from tinyprune.app.tasks import task_loss
    from tinyprune.training import TrainConfig, fit

    loaders = bundle.loaders(batch_size=s.batch_size, seed=s.seed)
    cfg = TrainConfig(
        epochs=s.finetune.epochs, lr=s.finetune_lr, batch_size=s.batch_size, seed=s.seed
    )
    fit(model, loaders.train, cfg, loss_fn=task_loss(bundle.task), progress=False)


def _new_model(task: Task, seed: int) -> torch.nn.Module:
    from tinyprune.models import create_model

    torch.manual_seed(seed)
    return create_model(task.model, **task.model_kwargs)


@dataclass
class Run:
    """One (task, criterion, budget, seed) result."""

    task: str
    criterion: str
    budget: float
    seed: int
    macs_frac: float
    params_frac: float
    metric: float  # after fine-tuning
    metric_pruned: float  # right after pruning (tailored: after its freeze)
    seconds: float
    model: torch.nn.Module | None = None
    search: dict[str, Any] | None = None


def _run_task(
    task: Task,
    seeds: list[int],
    budgets: list[float],
    settings: Any,
    keep_models: bool,
    ft_lr_scale: float = 0.1,
    refusals: dict[tuple[str, str], str] | None = None,
) -> list[Run]:
    """Every (seed, budget, criterion) run of ``task``; a criterion that refuses the net (exit 2,
    e.g. bn_scale without BatchNorm) has no row and its reason goes to ``refusals``."""
    from tinyprune.app.jobs import prune_structured_job, train_for_criterion
    from tinyprune.config import FinetuneConfig
    from tinyprune.errors import ConfigError
    from tinyprune.pruning.select import Budget

    bundle, videos = _bundle(task), _eval_videos(task)
    runs: list[Run] = []
    for seed in seeds:
        s = dataclasses.replace(
            settings,
            seed=seed,
            epochs=task.epochs,
            finetune=FinetuneConfig(epochs=task.finetune_epochs, lr=task.lr * ft_lr_scale),
            lr=task.lr,
            batch_size=task.batch_size,
        )
        base = _new_model(task, seed)
        trained: dict[str, tuple[torch.nn.Module, float]] = {}
        for kind in ("l1", "pcc_ci"):  # hook-free pre-training, and pre-training with PCC
            m = copy.deepcopy(base)
            info = train_for_criterion(m, bundle, kind, s)
            trained[kind] = (m, info["seconds"]["train"])
        dense = _metric(task, trained["l1"][0], bundle, videos)
        runs.append(Run(task.name, "dense", 1.0, seed, 1.0, 1.0, dense, dense, 0.0))
        for frac in budgets:
            for name in ROWS:
                crit, opts = VARIANTS.get(name, (name, {}))
                opts = task.criterion_options.get(crit, {}) | opts
                start = time.perf_counter()
                if crit == "tailored":
                    model, pre, job = copy.deepcopy(base), 0.0, s
                else:
                    src, pre = trained["pcc_ci" if crit == "pcc_ci" else "l1"]
                    model, job = copy.deepcopy(src), dataclasses.replace(s, epochs=0)
                job = dataclasses.replace(  # fine-tuned below
                    job, finetune=FinetuneConfig(epochs=0), criterion_options=opts
                )
                try:
                    summary = prune_structured_job(model, bundle, crit, Budget(frac), job)
                except ConfigError as e:  # e.g. bn_scale on a net without BatchNorm
                    if refusals is not None:
                        refusals[(task.name, name)] = str(e)
                    continue
                pruned = _metric(task, model, bundle, videos)
                _finetune(model, bundle, s)
                p = summary["prune"]
                runs.append(
                    Run(
                        task.name,
                        name,
                        frac,
                        seed,
                        p["macs_after"] / p["macs_before"],
                        p["params_after"] / p["params_before"],
                        _metric(task, model, bundle, videos),
                        pruned,
                        time.perf_counter() - start + pre,
                        model if keep_models and seed == seeds[0] else None,
                        summary.get("search"),
                    )
                )
                logging.info(
                    "%s %s %.2f seed %d: %s",
                    task.name,
                    name,
                    frac,
                    seed,
                    dataclasses.asdict(runs[-1]) | {"model": None},
                )
    return runs


def _export(run: Run, task: Task, bundle: Any, out: Path) -> tuple[int, int, bool]:
    from firmware_export import export

    calib = bundle.calibration_batches(min(64, len(bundle.train)), seed=0)
    model = run.model
    model.input_shape = tuple(bundle.input_shape)
    res = export(model.eval(), calib, target="cortex-m7", out_dir=out, raise_on_budget=False)
    parity = res.report["verify"].get("tflm_vs_litert_ref", {})
    return (
        int(res.report["flash_bytes"]),
        int(res.report["arena_bytes"]),
        bool(parity.get("passed")),
    )


def _stats(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def _verdicts(rows: list[Run], task: Task, frac: float, name: str, stage: str = "metric") -> str:
    """Marks against the baselines, paired by seed (same data, same initialisation).

    ``>=rand`` / ``~rand`` / ``<rand``: mean paired difference to random >= 0 / below 0 but
    within two standard errors / worse. ``>l1`` / ``~l1`` / ``<l1`` likewise against l1.
    ``stage``: ``"metric"`` (after fine-tuning) or ``"metric_pruned"`` (right after pruning).
    """
    sign = 1.0 if task.higher_is_better else -1.0

    def by_seed(c: str) -> dict[int, float]:
        return {r.seed: getattr(r, stage) for r in rows if r.criterion == c and r.budget == frac}

    mine = by_seed(name)

    def mark(base: str) -> str:
        other = by_seed(base)
        diffs = [sign * (mine[k] - other[k]) for k in mine if k in other]
        mean, sd = _stats(diffs)
        se = sd / np.sqrt(len(diffs)) if diffs else 0.0
        short = "rand" if base == "random" else base
        if mean > 2 * se or (mean >= 0 and base == "random"):
            return (">" if base == "l1" else ">=") + short
        return ("~" if mean >= -2 * se else "<") + short

    return " ".join(mark(b) for b in ("random", "l1") if b != name)


def _table(runs: list[Run], tasks: list[Task], exports: dict[tuple[str, str, float], Any]) -> str:
    head = (
        f"{'task':18s} {'criterion':14s} {'target':>6s} {'MACs kept':>9s} {'params kept':>11s}"
        f" {'pruned':>7s} {'fine-tuned (mean ± std)':>27s} {'time s':>7s} {'flash B':>8s}"
        f" {'arena B':>8s}"
        f" {'tflm ok':>8s}  {'vs baselines: pruned':21s} fine-tuned"
    )
    lines = [head, "-" * len(head)]
    for task in tasks:
        rows = [r for r in runs if r.task == task.name]
        for frac in sorted({r.budget for r in rows}, reverse=True):
            for name in ("dense", *ROWS):
                sel = [r for r in rows if r.criterion == name and r.budget == frac]
                if not sel:
                    continue
                m, sd = _stats([r.metric for r in sel])
                pruned = _stats([r.metric_pruned for r in sel])[0]
                macs, params = (
                    _stats([r.macs_frac for r in sel]),
                    _stats([r.params_frac for r in sel]),
                )
                t = _stats([r.seconds for r in sel])[0]
                flash, arena, same = exports.get((task.name, name, frac), ("-", "-", "-"))
                label = "accuracy" if task.metric == "accuracy" else "video HR MAE"
                metric = f"{label} {m:.3f} ± {sd:.3f}"
                marks = "" if name == "dense" else _verdicts(rows, task, frac, name)
                marks_pruned = (
                    "" if name == "dense" else _verdicts(rows, task, frac, name, "metric_pruned")
                )
                lines.append(
                    f"{task.name:18s} {name:14s} {frac:6.2f} {macs[0]:9.3f} {params[0]:11.3f}"
                    f" {pruned:7.3f} {metric:>27s} {t:7.1f} {flash!s:>8s} {arena!s:>8s}"
                    f" {same!s:>8s}"
                    f"  {marks_pruned:21s} {marks}"
                )
    return "\n".join(lines)


def _target_counts(runs: list[Run], tasks: list[Task], stage: str = "metric") -> str:
    """How many (task, budget) cells of the seed criteria meet the baseline targets."""
    marks = [
        _verdicts([r for r in runs if r.task == t.name], t, frac, name, stage).split()
        for t in tasks
        for frac in sorted({r.budget for r in runs if r.task == t.name})
        for name in SEED_CRITERIA
        if any(r.criterion == name and r.task == t.name and r.budget == frac for r in runs)
    ]
    count = {m: sum(m in cell for cell in marks) for m in (">=rand", "~rand", "<rand")}
    l1_ok = sum(("~l1" in cell) or (">l1" in cell) for cell in marks)
    when = "after fine-tuning" if stage == "metric" else "right after pruning"
    return (
        f"{when}: seed criteria {', '.join(SEED_CRITERIA)} over {len(marks)} cells: >= random in "
        f"{count['>=rand']}, below it within noise in {count['~rand']}, clearly below in "
        f"{count['<rand']}; within noise of or better than l1 in {l1_ok}"
    )


def _tailored_check(runs: list[Run]) -> list[str]:
    out = []
    for r in runs:
        if r.criterion == "tailored":
            err = r.macs_frac / r.budget - 1
            ok = "ok" if abs(err) <= 0.02 else "MISSED"
            out.append(
                f"tailored {r.task} target {r.budget:.2f} seed {r.seed}: MACs kept "
                f"{r.macs_frac:.4f} ({err:+.1%} of target) {ok}"
            )
    return out


def bench(
    mode: str,
    do_export: bool,
    seeds: int | None,
    round_to: int = 1,
    ft_lr_scale: float = 0.1,
    test_videos: int | None = None,
    only: Sequence[str] = (),
) -> None:
    """The criteria table (see the module docstring); ``only``: these task models alone."""
    from tinyprune.config import DESearchConfig, PruneConfig
    from tinyprune.errors import TinypruneError

    tasks = [t for t in _tasks(mode, test_videos) if not only or t.model in only]
    n_seeds = seeds or (1 if mode == "quick" else 3)
    budgets = [0.5, 0.25]
    de = {"quick": (6, 3), "default": (10, 10), "full": (20, 30)}[mode]
    de_cfg = DESearchConfig(pop=de[0], gens=de[1])
    settings = PruneConfig(progress=False, de=de_cfg, round_to=round_to)
    print(
        f"mode {mode}: seeds {list(range(n_seeds))}, budgets (MACs kept) {budgets}, "
        f"round_to {round_to}"
    )
    runs: list[Run] = []
    exports: dict[tuple[str, str, float], Any] = {}
    failures: list[str] = []
    refusals: dict[tuple[str, str], str] = {}
    start = time.perf_counter()
    for task in tasks:
        print(
            f"{task.name}: {task.model}{task.model_kwargs}, train {task.epochs} + fine-tune "
            f"{task.finetune_epochs} epochs, lr {task.lr} (fine-tuning {task.lr * ft_lr_scale:g}), "
            f"batch {task.batch_size}"
            + (
                f", HR over {task.eval_kwargs['n_test']} held-out videos"
                if task.eval_kwargs
                else ""
            )
            + (f", criterion options {task.criterion_options}" if task.criterion_options else ""),
            flush=True,
        )
        task_runs = _run_task(
            task, list(range(n_seeds)), budgets, settings, do_export, ft_lr_scale, refusals
        )
        runs += task_runs
        if do_export:
            bundle = _bundle(task)
            with tempfile.TemporaryDirectory() as tmp:
                for r in task_runs:
                    if r.model is not None and (
                        mode != "quick" or (r.criterion, r.budget) == ("l1", 0.5)
                    ):
                        out = Path(tmp) / f"{r.criterion}_{r.budget}"
                        try:
                            exports[(task.name, r.criterion, r.budget)] = _export(
                                r, task, bundle, out
                            )
                        except TinypruneError as e:  # report it in the table, keep going
                            exports[(task.name, r.criterion, r.budget)] = ("failed",) * 3
                            failures.append(f"export {task.name} {r.criterion} {r.budget}: {e}")
                        r.model = None
    for r in runs:
        if r.search is not None and r.seed == 0:
            s = r.search
            print(
                f"cluster_de DE {r.task} target {r.budget:.2f}: population {s['pop']}, "
                f"generations {s['gens']}, evaluations {s['evaluations']}, images used "
                f"{s['calib_images']} BN-recalibration + {s['heldout_images']} held-out "
                f"(training set), {s['workers']} workers, fitness {s['metric']}, "
                f"{s['seconds']:.1f} s"
            )
    for (task_name, name), why in sorted(refusals.items()):
        print(f"{task_name} {name}: no row, the criterion refused the net (exit 2): {why}")
    print("\n".join(_tailored_check(runs)))
    print("\n".join(sorted({f.split(": ", 1)[1][:300] for f in failures})))
    print(_table(runs, tasks, exports))
    print(_target_counts(runs, tasks, "metric_pruned"))
    print(_target_counts(runs, tasks))
    print(f"total {time.perf_counter() - start:.0f} s")


def de_timing(mode: str, names: Sequence[str] = ("resnet20", "vgg16_cifar")) -> None:
    """DE search time, default settings (docs/methods.md §4.6), CIFAR-shaped random data."""
    from tinyprune.config import DESearchConfig

    ds = DESearchConfig()
    from tinyprune.criteria.cluster_search import SearchOptions, search_clusters_report
    from tinyprune.models import create_model
    from tinyprune.pruning.select import Budget

    limits = {"resnet20": 120.0, "vgg16_cifar": 600.0}
    images = {
        "quick": (32, 32),
        "default": (ds.calib, ds.heldout),
        "full": (4 * ds.calib, 4 * ds.heldout),
    }[mode]
    pop, gens = (6, 2) if mode == "quick" else (ds.pop, ds.gens)
    for name in names:
        torch.manual_seed(0)
        model = create_model(name).eval()
        g = torch.Generator().manual_seed(0)
        calib = [torch.randn(n, 3, 32, 32, generator=g) for n in _chunks(images[0], 64)]
        held = [
            (torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))
            for n in _chunks(images[1], 64)
        ]
        _, rep = search_clusters_report(
            model,
            torch.randn(2, 3, 32, 32, generator=g),
            Budget(target_flops=0.5),
            calib,
            held,
            SearchOptions(pop=pop, gens=gens, metric="neg_ce"),
        )
        limit = limits.get(name, float("inf"))
        verdict = "ok" if rep.seconds <= limit else "OVER"
        print(
            f"DE timing {name}: population {rep.pop}, generations {rep.gens}, "
            f"{rep.evaluations} distinct evaluations, images {rep.calib_images} BN-recal + "
            f"{rep.heldout_images} held-out per evaluation, {rep.workers} worker processes: "
            f"{rep.seconds:.1f} s (target <= {limit:.0f} s) {verdict}",
            flush=True,
        )


def _chunks(total: int, size: int) -> list[int]:
    return [min(size, total - i) for i in range(0, total, size)]


def vgg_operating_point(out: Path | None = None) -> dict[str, Any]:
    """VGG-16 (random init) pruned by pcc_ci to <= 15.4 % MACs / <= 7.3 % params, int8, TFLM."""
    from firmware_export import export
    from tinyprune import criteria
    from tinyprune.models import create_model
    from tinyprune.pruning import Budget, prune_structured

    torch.manual_seed(0)
    model = create_model("vgg16_cifar").eval()
    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(16, 3, 32, 32, generator=g),) for _ in range(5)]
    start = time.perf_counter()
    result = prune_structured(
        model,
        data[0][0][:2],
        criteria.get("pcc_ci"),
        Budget(target_flops=0.154, target_params=0.073),
        data=data,
    )
    prune_s = time.perf_counter() - start
    calib = torch.rand(32, 3, 32, 32, generator=g).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        res = export(
            model,
            calib,
            target="cortex-m7",
            out_dir=out or Path(tmp) / "vgg",
            raise_on_budget=False,
        )
        report = res.report
    info = {
        "macs_frac": result.macs_after / result.macs_before,
        "params_frac": result.params_after / result.params_before,
        "macs": result.macs_after,
        "params": result.params_after,
        "prune_seconds": prune_s,
        "flash_bytes": report["flash_bytes"],
        "arena_bytes": report["arena_bytes"],
        "tflm_vs_litert_ref": report["verify"]["tflm_vs_litert_ref"],
        "fits": res.fits,
    }
    return info


def main(argv: list[str] | None = None) -> int:
    """Parse the mode and run the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="2-minute smoke run")
    g.add_argument("--full", action="store_true", help="larger grid, docs/methods.md DE settings")
    p.add_argument("--de-timing", action="store_true", help="only time the DE search")
    p.add_argument(
        "--de-models",
        default="resnet20,vgg16_cifar",
        help="comma-separated zoo models timed by --de-timing",
    )
    p.add_argument("--vgg", action="store_true", help="only the VGG-16 pcc_ci operating point")
    p.add_argument("--no-export", action="store_true", help="skip the int8 exports")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; quick 1)")
    p.add_argument(
        "--round-to",
        type=int,
        default=1,
        help="kept widths are multiples of this (1: budgets met to one channel, so "
        "criteria compare at equal cost; 4 or 8 suit CMSIS-NN)",
    )
    p.add_argument(
        "--finetune-lr-scale",
        type=float,
        default=0.1,
        help="fine-tuning peak learning rate = this x the training one, the same for every "
        "criterion (0.1: the usual pruning recipe, e.g. CHIP; 1.0 re-trains the pruned nets)",
    )
    p.add_argument(
        "--test-videos",
        type=int,
        default=None,
        help="held-out synthetic rPPG videos the HR MAE is taken over (default 48; quick 6, "
        "full 96): one video read at a harmonic moves the MAE by ~50 bpm / this",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 is fastest for these small nets on a shared machine)",
    )
    p.add_argument(
        "--tasks",
        default="",
        help="comma-separated task models to run (micro_cnn, physnet_2p1d, tscan, "
        "efficientphys; default all)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.test_videos is not None and args.test_videos < 1:
        p.error(f"--test-videos must be >= 1, got {args.test_videos}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    torch.set_num_threads(args.threads)
    mode = "quick" if args.quick else "full" if args.full else "default"
    if args.de_timing:
        de_timing(mode, args.de_models.split(","))
    elif args.vgg:
        info = vgg_operating_point()
        print("VGG-16 pcc_ci operating point:", {k: v for k, v in info.items()})
        ok = info["macs_frac"] <= 0.154 and info["params_frac"] <= 0.073
        print(
            "targets (<= 15.4 % MACs, <= 7.3 % params, TFLM == LiteRT ref):",
            "met" if ok and info["tflm_vs_litert_ref"]["max_abs"] == 0 else "NOT met",
        )
    else:
        bench(
            mode,
            not args.no_export,
            args.seeds,
            args.round_to,
            args.finetune_lr_scale,
            args.test_videos,
            [t for t in args.tasks.split(",") if t],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
