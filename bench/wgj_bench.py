"""Does the weight-gradient joint criterion (wgj) beat gmp, set and rigl on small rPPG nets?

Every criterion trains the same network from the same initialisation on the same synthetic rPPG
data with the same budget (epochs, optimizer, lr, ``delta_t``, floors, cubic density schedule),
dense-to-sparse, at densities 0.2 / 0.1 / 0.05 and over several seeds. It prints:

* HR MAE on the held-out synthetic test videos (mean +- std over seeds; HR per video from the
  predicted DiffNormalized BVP by ``tinyprune.metrics.hr_from_bvp(diff=True)``) and the mean
  waveform Pearson r per clip, plus a dense reference;
* non-zero params and non-zero MACs per clip (``masks.sparsity_report``);
* the mask-update overhead: optimizer steps with and without the criterion's hook, interleaved in
  one process on the same model and batch (target: hook step <= 1.3 x dense step);
* for seed 0, the exported int8 sizes on a LiteRT target: dense ``model_int8.tflite`` and the
  sparse ``EXPERIMENTAL_SPARSITY`` flatbuffer (``firmware_export.sparse.sparse_tflite``).

Models: ``physnet_2p1d`` (TFLM-native (2+1)-D PhysNet) and ``deeprppg`` (3-D DeeprPPG-R), both
at width 8 on 16x16 x 32-frame clips. Synthetic data is no substitute for PURE/UBFC: the numbers
say how the criteria compare at equal budget, not what MAE a real camera gives.

    /work/venv/bin/python bench/wgj_bench.py            # ~25 min on 2 cores
    /work/venv/bin/python bench/wgj_bench.py --quick    # ~2 min smoke run
    /work/venv/bin/python bench/wgj_bench.py --full     # larger data, longer training, all exports
    /work/venv/bin/python bench/wgj_bench.py --t8       # docs/methods.md T8 check only (~30 s)

``--t8`` runs the end-to-end faithfulness check T8 of docs/methods.md §2.10 (the same code as
``tests/tinyprune/pruning/test_wgj_end_to_end.py``, ``bench/sparse_eval.py run_t8``) and
prints dense / wgj@0.1 / one-shot magnitude@0.1 HR MAE; ``--seeds`` repeats it over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from sparse_eval import T8Setup, evaluate_rppg, run_t8

from tinyprune import criteria
from tinyprune.data import build_dataset
from tinyprune.metrics import neg_pearson_loss
from tinyprune.models import create_model
from tinyprune.pruning.masks import sparsity_report
from tinyprune.training import TrainConfig, fit
from tinyprune.training.hooks import TrainContext

TARGET_OVERHEAD = 1.3
CRITERIA = ("wgj", "gmp", "set", "rigl")


@dataclass(frozen=True)
class Setup:
    """One bench configuration (what ``--quick`` / default / ``--full`` change)."""

    models: tuple[str, ...] = ("physnet_2p1d", "deeprppg")
    width: int = 8
    densities: tuple[float, ...] = (0.2, 0.1, 0.05)
    criteria: tuple[str, ...] = CRITERIA
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 12
    lr: float = 3e-3
    batch_size: int = 8
    delta_t: int = 10
    min_per_channel: int = 1
    n_train: int = 8
    n_test: int = 8
    clips_per_video: int = 8
    size: int = 16
    frames: int = 32
    overhead_steps: int = 60
    export_all: bool = False
    export: bool = True
    threads: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


QUICK = Setup(
    models=("physnet_2p1d",),
    densities=(0.1,),
    seeds=(0,),
    epochs=3,
    n_train=2,
    n_test=2,
    overhead_steps=20,
    delta_t=4,
)
FULL = Setup(epochs=40, n_train=24, n_test=16, export_all=True, overhead_steps=100)


@dataclass
class RunResult:
    """One trained network."""

    model: str
    criterion: str
    density: float
    seed: int
    hr_mae: float
    pearson: float
    nonzero_params: int
    dense_params: int
    effective_macs: int
    dense_macs: int
    seconds: float


def make_model(setup: Setup, name: str, seed: int) -> torch.nn.Module:
    """The network, initialised from ``seed`` (the same init for every criterion)."""
    torch.manual_seed(seed)
    return create_model(name, frames=setup.frames, img_size=setup.size, width=setup.width)


def make_criterion(setup: Setup, name: str, density: float) -> Any:
    """A criterion with the bench's shared schedule and floors."""
    return criteria.get(
        name,
        sparsity=round(1.0 - density, 6),
        delta_t=setup.delta_t,
        min_per_channel=setup.min_per_channel,
    )


def train_one(
    setup: Setup, bundle: Any, model_name: str, crit: str | None, density: float, seed: int
) -> tuple[RunResult, torch.nn.Module]:
    """Train one network (dense when ``crit`` is None) and measure it."""
    model = make_model(setup, model_name, seed)
    hooks = [] if crit is None else [make_criterion(setup, crit, density).make_hook()]
    cfg = TrainConfig(
        epochs=setup.epochs, lr=setup.lr, batch_size=setup.batch_size, seed=seed, log_every=0
    )
    start = time.perf_counter()
    fit(
        model,
        bundle.loaders(batch_size=setup.batch_size, seed=seed).train,
        cfg,
        loss_fn=neg_pearson_loss,
        hooks=hooks,
        progress=False,
    )
    seconds = time.perf_counter() - start
    rep = sparsity_report(model, (1, *bundle.input_shape))
    mae, r = evaluate_rppg(model, bundle)
    res = RunResult(
        model_name,
        crit or "dense",
        density,
        seed,
        mae,
        r,
        rep.nonzero_params,
        rep.dense_params,
        rep.effective_macs,
        rep.dense_macs,
        seconds,
    )
    return res, model


def _train_step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    hook: Any,
    ctx: TrainContext,
) -> float:
    """One optimizer step in the loop's order; returns its wall time (hook calls included)."""
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    neg_pearson_loss(model(x), y).backward()
    if hook is not None:
        hook.after_backward(ctx)
    opt.step()
    if hook is not None:
        ctx.step += 1
        hook.after_step(ctx)
    return time.perf_counter() - start


def overhead(
    setup: Setup, bundle: Any, model_name: str, crit: str, density: float
) -> dict[str, float]:
    """Interleaved dense / hooked steps on one model and batch; hooked steps update masks.

    The hook's schedule is placed so that its mask updates (every ``delta_t`` hooked steps) run
    throughout the timed steps, so the ratio includes their amortised cost.
    """
    model = make_model(setup, model_name, 0)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=setup.lr)
    n = setup.overhead_steps
    cfg = replace(make_criterion(setup, crit, density), t_start=setup.delta_t, t_f=n // 2, t_end=n)
    hook = cfg.make_hook()
    ctx = TrainContext(model=model, optimizer=opt, steps_per_epoch=n, total_steps=n)
    hook.on_train_begin(ctx)
    x = torch.from_numpy(bundle.train.x[: setup.batch_size])
    y = torch.from_numpy(bundle.train.y[: setup.batch_size])
    for _ in range(3):  # warm-up (allocator, kernels), not timed
        _train_step(model, opt, x, y, None, ctx)
    dense, hooked = [], []
    for i in range(n):
        order = (False, True) if i % 2 == 0 else (True, False)
        for with_hook in order:
            t = _train_step(model, opt, x, y, hook if with_hook else None, ctx)
            (hooked if with_hook else dense).append(t)
    # medians: the machine is shared, and a burst of load hits single steps, not a whole side
    d_ms, h_ms = 1e3 * statistics.median(dense), 1e3 * statistics.median(hooked)
    upd = [
        t
        for t, r in zip(hooked, range(n), strict=True)
        if r + 1 >= setup.delta_t and (r + 1 - setup.delta_t) % setup.delta_t == 0
    ]
    return {
        "dense_ms": d_ms,
        "hook_ms": h_ms,
        "ratio": h_ms / d_ms,
        "mean_ratio": sum(hooked) / sum(dense),
        "update_step_ms": 1e3 * statistics.median(upd) if upd else float("nan"),
        "updates": float(len(hook.records)),
    }


def export_sizes(model: torch.nn.Module, bundle: Any) -> dict[str, Any]:
    """Dense int8 and sparse int8 TFLite bytes of ``model`` (LiteRT route, channels-last).

    Runs the pipeline's conversion stages directly (ONNX -> SavedModel -> full int8) rather than
    ``firmware_export.export``, whose float-model check runs LiteRT's reference kernels, which
    lack ELU (used by physnet_2p1d's upsampling blocks).
    """
    from firmware_export.calibration import to_channels_last
    from firmware_export.convert import convert_to_saved_model
    from firmware_export.export_onnx import export_onnx
    from firmware_export.quantize import quantize_int8
    from firmware_export.sparse import sparse_tflite

    calib = bundle.calibration_batches(min(32, len(bundle.train)), seed=0)
    shape = tuple(getattr(model, "input_shape", calib.shape[1:]))
    calib = calib.reshape(len(calib), *shape)  # frame-stacked nets: (C, T, H, W) -> (C, T*H, W)
    cl = to_channels_last(calib)
    model.eval()
    with tempfile.TemporaryDirectory(prefix="wgj_bench_") as tmp:
        work = Path(tmp)
        export_onnx(model, calib[0], work / "model.onnx")
        convert_to_saved_model(work / "model.onnx", work / "saved_model", cl)
        dense = quantize_int8(work / "saved_model", cl)
        sparse = sparse_tflite(work / "saved_model", cl, dense)
    return {
        "dense_bytes": len(dense),
        "sparse_bytes": sparse.sparse_bytes if sparse is not None else None,
        "sparse_identical": sparse.identical if sparse is not None else None,
    }


def _fmt_pm(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(
    results: list[RunResult],
    sizes: dict[tuple[str, str, float], dict[str, Any]],
    over: dict[tuple[str, str], dict[str, float]],
) -> str:
    """The printed table: one row per (model, density, criterion), seeds aggregated."""
    keys = sorted(
        {(r.model, r.density, r.criterion) for r in results},
        key=lambda k: (k[0], -k[1], CRITERIA.index(k[2]) if k[2] in CRITERIA else -1),
    )
    head = (
        f"{'model':<14}{'density':>8} {'criterion':<9}{'HR MAE bpm':>17}{'wave r':>16}"
        f"{'nz params':>11}{'params':>9}{'nz MMACs':>10}{'MMACs':>8}{'step x':>8}"
        f"{'int8 B':>9}{'sparse B':>10}"
    )
    rows = [head, "-" * len(head)]
    for model, density, crit in keys:
        runs = [r for r in results if (r.model, r.density, r.criterion) == (model, density, crit)]
        r0 = runs[0]
        ov = over.get((model, crit))
        sz = sizes.get((model, crit, density), {})
        sparse_b = sz.get("sparse_bytes")
        ratio = f"{ov['ratio']:.2f}" if ov else "-"
        rows.append(
            f"{model:<14}{density:>8.2f} {crit:<9}{_fmt_pm([r.hr_mae for r in runs]):>17}"
            f"{_fmt_pm([r.pearson for r in runs], 3):>16}"
            f"{statistics.mean(r.nonzero_params for r in runs):>11.0f}{r0.dense_params:>9}"
            f"{statistics.mean(r.effective_macs for r in runs) / 1e6:>10.2f}"
            f"{r0.dense_macs / 1e6:>8.2f}"
            f"{ratio:>8}"
            f"{sz.get('dense_bytes', '-')!s:>9}{('-' if sparse_b is None else str(sparse_b)):>10}"
        )
    return "\n".join(rows)


def winners(results: list[RunResult]) -> list[str]:
    """Per (model, density): criteria ranked by mean HR MAE, ties broken by mean waveform r."""
    lines = []
    for model in sorted({r.model for r in results}):
        for density in sorted({r.density for r in results if r.criterion != "dense"}, reverse=True):
            score: dict[str, tuple[float, float]] = {}
            for c in CRITERIA:
                runs = [
                    r for r in results if (r.model, r.density, r.criterion) == (model, density, c)
                ]
                if runs:
                    score[c] = (
                        statistics.mean(r.hr_mae for r in runs),
                        -statistics.mean(r.pearson for r in runs),
                    )
            if not score:
                continue
            order = sorted(score, key=lambda c: score[c])
            rank = order.index("wgj") + 1 if "wgj" in order else None
            ranked = ", ".join(f"{c} {score[c][0]:.2f} bpm / r {-score[c][1]:.3f}" for c in order)
            lines.append(f"{model} d={density:.2f}: {ranked}  (wgj rank {rank}/{len(order)})")
    return lines


def parse(argv: list[str] | None) -> Setup:
    """Command line -> :class:`Setup`."""
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="one model, one density, one seed")
    mode.add_argument("--full", action="store_true", help="more data, 40 epochs, all exports")
    mode.add_argument("--t8", action="store_true", help="only the T8 end-to-end check")
    p.add_argument(
        "--models",
        nargs="+",
        help="override the model list (one process per model "
        "runs the default grid in ~half the time on 2 free cores)",
    )
    p.add_argument("--seeds", type=int, nargs="+", help="override the seeds")
    p.add_argument("--densities", type=float, nargs="+", help="override the densities")
    p.add_argument("--epochs", type=int, help="override the epochs")
    p.add_argument("--no-export", action="store_true", help="skip the TFLite exports")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--json", type=Path, help="also write all results to this JSON file")
    a = p.parse_args(argv)
    setup = QUICK if a.quick else FULL if a.full else Setup()
    over: dict[str, Any] = {"threads": a.threads, "export": not a.no_export}
    for key in ("models", "seeds", "densities"):
        if getattr(a, key):
            over[key] = tuple(getattr(a, key))
    if a.epochs:
        over["epochs"] = a.epochs
    return replace(setup, **over, extra={"json": a.json, "t8": a.t8})


def main_t8(setup: Setup) -> int:
    """Methods.md T8: dense / wgj / one-shot magnitude HR MAE per seed, and the verdicts."""
    rows = []
    for seed in setup.seeds:
        start = time.perf_counter()
        r = run_t8(T8Setup(seed=seed, epochs=setup.epochs))
        ok = (r.dense_mae < 2.0, r.wgj_mae <= r.dense_mae + 1.0, r.wgj_mae < r.magnitude_mae)
        rows.append(r.__dict__ | {"seed": seed, "checks": ok})
        print(
            f"seed {seed}: dense {r.dense_mae:.2f} bpm (r {r.dense_r:.3f}) | "
            f"wgj@{T8Setup.density} {r.wgj_mae:.2f} bpm (r {r.wgj_r:.3f}) | one-shot magnitude"
            f"@{T8Setup.density} {r.magnitude_mae:.2f} bpm (r {r.magnitude_r:.3f}; "
            f"{r.magnitude_no_ft_mae:.2f} before its {r.finetune_epochs}-epoch fine-tune) | "
            f"dense<2: {ok[0]}, wgj<=dense+1: {ok[1]}, wgj<magnitude: {ok[2]} "
            f"[{time.perf_counter() - start:.0f}s]",
            flush=True,
        )
    if setup.extra.get("json"):
        Path(setup.extra["json"]).write_text(json.dumps(rows, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the grid, print the table; never fails on a missed target."""
    setup = parse(argv)
    torch.set_num_threads(setup.threads)
    if setup.extra.get("t8"):
        return main_t8(setup)
    bundle = build_dataset(
        "synthetic-rppg",
        size=setup.size,
        chunk=setup.frames,
        n_train=setup.n_train,
        n_val=1,
        n_test=setup.n_test,
        clips_per_video=setup.clips_per_video,
        real_ppg=False,
    )
    print(
        f"data: {len(bundle.train)} train / {len(bundle.test)} test clips {bundle.input_shape}, "
        f"{setup.epochs} epochs x {len(bundle.train) // setup.batch_size + 1} steps, "
        f"delta_t={setup.delta_t}, seeds {setup.seeds}",
        flush=True,
    )
    results: list[RunResult] = []
    sizes: dict[tuple[str, str, float], dict[str, Any]] = {}
    over: dict[tuple[str, str], dict[str, float]] = {}
    started = time.perf_counter()
    for model_name in setup.models:
        for seed in setup.seeds:
            res, _ = train_one(setup, bundle, model_name, None, 1.0, seed)
            results.append(res)
            for density in setup.densities:
                for crit in setup.criteria:
                    res, model = train_one(setup, bundle, model_name, crit, density, seed)
                    results.append(res)
                    print(
                        f"[{time.perf_counter() - started:6.0f}s] {model_name} {crit} "
                        f"d={density} seed={seed}: MAE {res.hr_mae:.2f} bpm, "
                        f"r {res.pearson:.3f}, "
                        f"nz {res.nonzero_params}, {res.seconds:.1f}s",
                        flush=True,
                    )
                    want = setup.export_all or crit == "wgj"
                    if setup.export and seed == setup.seeds[0] and want:
                        sizes[(model_name, crit, density)] = export_sizes(model, bundle)
        for crit in setup.criteria:
            over[(model_name, crit)] = overhead(
                setup, bundle, model_name, crit, min(setup.densities)
            )
            print(f"overhead {model_name} {crit}: {over[(model_name, crit)]}", flush=True)
    print()
    print(table(results, sizes, over))
    print()
    print("\n".join(winners(results)))
    worst = max((o["ratio"] for o in over.values()), default=float("nan"))
    verdict = "PASS" if worst <= TARGET_OVERHEAD else "FAIL"
    print(
        f"mask-update overhead: worst hook/dense step ratio {worst:.2f} "
        f"(target <= {TARGET_OVERHEAD}): {verdict}; total {time.perf_counter() - started:.0f}s"
    )
    if setup.extra.get("json"):
        Path(setup.extra["json"]).write_text(
            json.dumps(
                {
                    "results": [r.__dict__ for r in results],
                    "sizes": {"|".join(map(str, k)): v for k, v in sizes.items()},
                    "overhead": {"|".join(k): v for k, v in over.items()},
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
