"""``tinyprune fit`` on four boards and two tasks, beside the TF-MOT route at the same board.

For each board (cortex-m0plus = RP2040, nrf52840, cortex-m4 = STM32F446, rpi-zero2w), task and
seed this runs ``tinyprune fit`` (:func:`tinyprune.app.board.fit_board`: every criterion's
largest fitting MACs budget by bisection with real exports, fine-tuned; the best metric wins
and is exported) and then the TF-MOT route: the same network as a Keras model, pruned with
``prune_low_magnitude`` to the sparsity that leaves the chosen network's non-zero parameters
(as exported without the LiteRT block convolutions, :func:`network_nonzero`), prune-preserving
QAT, exported through the same pipeline to the same board.

Tasks (sizes are flags):

* ``digits``: ``micro_cnn`` (width 16) on scikit-learn's handwritten digits; metric: test
  accuracy. Latency limit 5 ms per digit (``--digits-latency-ms``): the dense net's estimate is
  2.6 ms on cortex-m4, 7.4 ms on nrf52840, 14.2 ms on the RP2040 and 0.09 ms on the Pi, so the
  limit binds on two boards; nothing else would (the dense int8 model is 31 KB of flash).
* ``rppg``: ``physnet_2p1d`` (width 8, 32 frames at 16x16) on synthetic rPPG; metric: the
  waveform's Pearson correlation on held-out subjects (32-frame clips are too short for an FFT
  heart rate). Chosen because it is the zoo's TFLM-native rPPG net with the plainest layers
  (conv, pool, transposed conv: a Keras twin is exact) and, at this size, its dense arena
  (150 KB) is over the STM32F446's 128 KiB RAM while fitting the other boards' 256-264 KiB, and
  its 32 M MACs miss real time (one 1.07 s clip per 1.07 s) on the RP2040 (2.9 s) and nRF52840
  (1.5 s): each of flash-fitting, RAM-bound and latency-bound boards occurs. tscan is bigger
  (its dense arena is 654 KB at 36x36) and its temporal shift has no plain Keras twin.

The fit's trial exports use 64 calibration and 4 verification samples (flash and arena depend
on the graph, not on them; the final export of each candidate uses all), the latency limit caps
the MACs fraction before any bisection (the estimate is linear in MACs), and ``--search-steps``
(default 3) bisection steps follow. Every fit and TF-MOT row is cached under ``--work``, so an
interrupted run resumes. Prints a Markdown table per task and board; ``--json`` writes all rows.

    python bench/fit_bench.py [--tasks digits,rppg] [--boards ...] [--seeds 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinyprune.errors import TinypruneError

BOARDS = ("cortex-m0plus", "nrf52840", "cortex-m4", "rpi-zero2w")
CRITERIA = ("tailored", "cluster_de", "pcc_ci", "l1")


@dataclass(frozen=True)
class Task:
    """One network + data set + training budget + latency limit."""

    name: str
    model: str
    model_kw: dict[str, Any]
    data: str
    data_kw: dict[str, Any]
    latency_ms: float | None
    epochs: int
    finetune_epochs: int
    batch_size: int
    lr: float = 3e-3
    finetune_lr: float = 3e-4
    extra: dict[str, Any] = field(default_factory=dict)


def tasks(args: argparse.Namespace) -> dict[str, Task]:
    """The two tasks at the sizes given on the command line."""
    t, s = args.rppg_frames, args.rppg_size
    rppg_data = {
        "n_train": args.rppg_videos,
        "n_val": 2,
        "n_test": args.rppg_test_videos,
        "clips_per_video": 2,
        "size": s,
        "chunk": t,
        "real_ppg": False,
        # noise-free frames: with synthetic-rppg's default camera noise this width-8 net at
        # 16x16 learns nothing in 12 epochs (dense Pearson r -0.01 on seed 0), and a board
        # comparison would rank noise
        "camera": "off",
    }
    return {
        "digits": Task(
            "digits",
            "zoo:micro_cnn",
            {"width": args.digits_width},
            "digits",
            {},
            args.digits_latency_ms,
            args.digits_epochs,
            args.digits_finetune_epochs,
            32,
        ),
        "rppg": Task(
            "rppg",
            "zoo:physnet_2p1d",
            {"frames": t, "img_size": s, "width": args.rppg_width},
            "synthetic-rppg",
            rppg_data,
            args.rppg_latency_ms or 1000.0 * t / 30.0,  # real time: one clip per clip length
            args.rppg_epochs,
            args.rppg_finetune_epochs,
            4,
        ),
    }


def fit_config(task: Task, board: str, seed: int, args: argparse.Namespace) -> Any:
    """The :class:`FitConfig` of one fit."""
    from tinyprune.config import DESearchConfig, FinetuneConfig, FitConfig, PruneConfig

    prune = PruneConfig(
        epochs=task.epochs,
        lr=task.lr,
        batch_size=task.batch_size,
        seed=seed,
        progress=False,
        finetune=FinetuneConfig(epochs=task.finetune_epochs, lr=task.finetune_lr),
        de=DESearchConfig(pop=args.de_pop, gens=args.de_gens),
        search_steps=args.search_steps,
    )
    return FitConfig(board, tuple(args.criteria), task.latency_ms, None, prune)


def run_fit(task: Task, board: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """``fit_board`` for one cell (cached in ``work/task/board/seedN/bench.json``)."""
    from tinyprune.app.board import fit_board
    from tinyprune.config import DataSpec, ModelSpec

    out = Path(args.work) / task.name / board / f"seed{seed}"
    cached = out / "bench.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    start = time.perf_counter()
    result = fit_board(
        ModelSpec(task.model, task.model_kw),
        DataSpec(task.data, task.data_kw),
        fit_config(task, board, seed, args),
        out,
    )
    seconds = time.perf_counter() - start
    row = {"task": task.name, "board": board, "seed": seed, "seconds": seconds, "fit": result}
    # the profile every export of this fit was checked against (with the latency limit)
    limited = out / f"{board}-latency.toml"
    row["profile"] = str(limited if limited.is_file() else board)
    if result["winner"] is not None:
        row["chosen_int8"] = int8_metric(task, out / "export" / "model_int8.tflite")
        report = json.loads((out / "export" / "report.json").read_text())
        row["chosen_report"] = {
            k: report.get(k) for k in ("params", "nonzero_params", "flash_bytes", "arena_bytes")
        } | {"latency_ms": (report.get("latency_estimate") or {}).get("ms"), "macs": report["macs"]}
    cached.write_text(json.dumps(row, indent=1, default=str))
    return row


def network_nonzero(fit: dict[str, Any], out: Path) -> int:
    """Non-zero params of the chosen network as exported without the LiteRT block convolutions.

    On a LiteRT board the export runs narrow convolutions on 2x2 pixel blocks, whose weights
    repeat each original weight four times (firmware_export/rewrite_onnx_s2d.py): the TF-MOT
    twin is matched to the network, so the chosen run is exported once more with
    ``space_to_depth="off"`` (cached in ``bench.json``).
    """
    report = fit["chosen_report"]
    if "network_nonzero_params" not in report:
        rewrites = json.loads((out / "export" / "report.json").read_text())["rewrites"]
        nonzero = int(report["nonzero_params"])
        if any(r.startswith("conv-space-to-depth:") for r in rewrites):
            import numpy as np

            from firmware_export import ExportOptions, export
            from tinyprune.app.sources import load_model

            run = Path(fit["fit"]["winner_run"])
            program = next(p for p in (run / "pruned.pt2", run / "model.pt2") if p.is_file())
            calib = np.load(run / "calib.npy")[:16]
            with tempfile.TemporaryDirectory() as tmp:
                plain = export(
                    load_model(str(program)),
                    calib,
                    target=fit["profile"],
                    out_dir=Path(tmp) / "export",
                    options=ExportOptions(verify_samples=2, space_to_depth="off"),
                    raise_on_budget=False,
                )
                nonzero = int(plain.report["nonzero_params"])
        report["network_nonzero_params"] = nonzero
        (out / "bench.json").write_text(json.dumps(fit, indent=1, default=str))
    return int(report["network_nonzero_params"])


_DATA: dict[str, Any] = {}


def bundle(task: Task) -> Any:
    """The task's data (built once per process)."""
    from tinyprune.data import build_dataset

    if task.name not in _DATA:
        _DATA[task.name] = build_dataset(task.data, **task.data_kw)
    return _DATA[task.name]


def nhwc(x: np.ndarray) -> np.ndarray:
    """PyTorch-layout samples -> the int8 model's channels-last layout (clips frame-stacked)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 5:  # (N, C, T, H, W) -> (N, C, T*H, W)
        n, c, t, h, w = x.shape
        x = x.reshape(n, c, t * h, w)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def metric_of(task: Task, outputs: np.ndarray, y: np.ndarray) -> float:
    """The task's primary metric (accuracy, or the waveform's Pearson r) of outputs."""
    import torch

    from tinyprune.app.tasks import task_metric

    b = bundle(task)
    got = task_metric(b.task, b.fs)(torch.from_numpy(outputs), torch.from_numpy(np.asarray(y)))
    return float(got["accuracy" if b.task == "classification" else "pearson"])


def int8_metric(task: Task, tflite: Path) -> float:
    """The metric of an int8 model on the test split (LiteRT builtin kernels)."""
    from tfmot_route import int8_outputs

    test = bundle(task).test
    return metric_of(task, int8_outputs(tflite.read_bytes(), nhwc(test.x)), test.y)


def twin(task: Task) -> Any:
    """The Keras twin of the task's network, trained as long as tinyprune's candidates."""
    from tfmot_route import digits_twin, rppg_twin

    pqat_epochs = max(1, task.finetune_epochs // 2)
    epochs = (task.epochs, task.finetune_epochs, pqat_epochs)
    if task.name == "digits":
        return digits_twin(task.model_kw["width"], epochs)
    kw = task.model_kw
    return rppg_twin(kw["frames"], kw["img_size"], kw["width"], epochs)


def tfmot_row(
    task: Task,
    fit: dict[str, Any],
    nonzero: int,
    args: argparse.Namespace,
    cached_only: bool = False,
) -> dict | None:
    """The TF-MOT route at ``nonzero`` non-zero params on the fit's board (cached per board).

    ``cached_only``: only a row already measured (None if there is none).
    """
    from tfmot_route import export_twin, for_export, sparsity_for

    board, seed, profile = fit["board"], fit["seed"], fit["profile"]
    root = Path(args.work) / "tfmot" / task.name / f"seed{seed}_nz{nonzero}"
    cached = root / f"{board}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    if cached_only:
        return None
    spec, data = twin(task), bundle(task)
    sparsity = sparsity_for(spec.build(None), nonzero)
    start = time.perf_counter()
    saved = root / "pqat.weights.h5"
    model = _pqat_model(spec, sparsity, data, seed, saved)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    x_cal = nhwc(data.calibration_batches(min(128, len(data.train)), seed=seed))
    try:
        row, model_bytes = export_twin(
            for_export(spec, model), x_cal, profile, f"tfmot_{task.name}"
        )
    except TinypruneError as e:  # the route's own result: a row that says so (not cached)
        first = (str(e).splitlines() or [""])[0]
        return {"task": task.name, "board": board, "seed": seed, "sparsity": sparsity,
                "error": f"exit {e.exit_code}: {first[:160]}"}  # fmt: skip
    row |= {
        "task": task.name,
        "board": board,
        "seed": seed,
        "sparsity": round(sparsity, 4),
        "metric": metric_of(
            task, _int8_outputs(model_bytes, nhwc(data.test.x)), np.asarray(data.test.y)
        ),
        "train_seconds": train_s,
        "export_seconds": time.perf_counter() - start,
    }
    root.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(row, indent=1))
    return row


def _int8_outputs(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    from tfmot_route import int8_outputs

    return int8_outputs(model_bytes, x)


def _pqat_model(spec: Any, sparsity: float, data: Any, seed: int, saved: Path) -> Any:
    """Train the PQAT twin, or rebuild it from the weights a previous board's row saved."""
    from tfmot_route import _quantize, train_pqat

    if saved.is_file():
        from firmware_export.tfmot_compat import import_tfmot

        model = _quantize(spec, spec.build(None), import_tfmot())
        model.load_weights(str(saved))
        return model
    x, y = nhwc(data.train.x), np.asarray(data.train.y)
    model = train_pqat(spec, sparsity, x, y, seed)
    saved.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(saved))
    return model


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every fit and TF-MOT row, seed by seed (so every board has seed 0 first); the tables."""
    from board_table import print_table

    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for seed in range(args.seeds):
        for name in args.tasks:
            task = tasks(args)[name]
            for board in args.boards:
                done = Path(args.work) / name / board / f"seed{seed}" / "bench.json"
                if args.cached and not done.is_file():
                    continue
                fit = run_fit(task, board, seed, args)
                log.info("%s %s seed %d: fit %.0f s", name, board, seed, fit["seconds"])
                if fit["fit"]["winner"] is not None and not args.no_tfmot:
                    nz = network_nonzero(fit, Path(args.work) / name / board / f"seed{seed}")
                    row = tfmot_row(task, fit, nz, args, args.cached)
                    if row is not None:
                        fit["tfmot"] = row
                cells.setdefault((name, board), []).append(fit)
    for (name, board), cell in cells.items():
        print_table(tasks(args)[name], board, cell, args.criteria)
    sys.stdout.flush()
    return [f for cell in cells.values() for f in cell]


log = logging.getLogger("fit_bench")


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags (every size is one)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="digits,rppg", type=lambda s: s.split(","))
    p.add_argument("--boards", default=",".join(BOARDS), type=lambda s: s.split(","))
    p.add_argument("--criteria", default=",".join(CRITERIA), type=lambda s: s.split(","))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--work", default="fit_bench_work", help="cache of fits (resumable)")
    p.add_argument("--json", help="write every row here")
    p.add_argument("--no-tfmot", action="store_true", help="skip the TF-MOT rows")
    p.add_argument("--cached", action="store_true", help="print the cells already measured")
    p.add_argument("--search-steps", type=int, default=3)
    p.add_argument("--de-pop", type=int, default=10)
    p.add_argument("--de-gens", type=int, default=10)
    p.add_argument("--digits-width", type=int, default=16)
    p.add_argument("--digits-epochs", type=int, default=16)
    p.add_argument("--digits-finetune-epochs", type=int, default=6)
    p.add_argument("--digits-latency-ms", type=float, default=5.0)
    p.add_argument("--rppg-frames", type=int, default=32)
    p.add_argument("--rppg-size", type=int, default=16)
    p.add_argument("--rppg-width", type=int, default=8)
    p.add_argument("--rppg-videos", type=int, default=12, help="training subjects")
    p.add_argument("--rppg-test-videos", type=int, default=6)
    p.add_argument("--rppg-epochs", type=int, default=12)
    p.add_argument("--rppg-finetune-epochs", type=int, default=6)
    p.add_argument("--rppg-latency-ms", type=float, help="default: the clip's duration")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the bench; print the tables."""
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("tinyprune", "firmware_export", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    start = time.perf_counter()
    rows = run(args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
