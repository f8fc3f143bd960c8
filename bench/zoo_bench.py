"""Does the model zoo train to useful accuracy on this machine, and keep it after int8 export?

Trains, with the library's data, models and training loop (no download):

* a TFLM-native rPPG net (default ``tscan``, 10 frames of 36x36) on ``synthetic-rppg``, and
  reports HR MAE per held-out synthetic subject (17 s videos, HR 55-130 bpm) and on the
  astronaut videos driven by heartpy's real contact-PPG recordings (``extras["real_ppg"]``);
* ``micro_cnn`` on scikit-learn's handwritten digits, and reports test accuracy.

Each trained model goes through ``firmware_export.export(..., target="cortex-m7")``; the int8
model then runs on the same held-out data with LiteRT's reference kernels (bit-exact with TFLM,
``firmware_export.verify.run_litert``): inputs quantized with the model's input scale/zero
point, outputs dequantized, HR by ``tinyprune.metrics.hr_from_bvp``. HR is taken per video
(the clips of a video concatenated), because a 10-frame clip is 1/3 s: far too short for an
FFT heart rate. One table goes to stdout; targets are printed as yes/no, never failing the run.

    /work/venv/bin/python bench/zoo_bench.py [--rppg-models tscan efficientphys] [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

RPPG_MAE_TARGET = 3.0  # bpm, held-out synthetic subjects
RPPG_TIME_TARGET = 600.0  # s, rPPG training
INT8_HR_TOLERANCE = 1.0  # bpm, int8 vs float HR MAE
DIGITS_ACC_TARGET = 0.97
DIGITS_TIME_TARGET = 120.0  # s
# Per-net input: DeepPhys/TS-CAN take [DiffNormalized, Standardized]; EfficientPhys
# standardised frames (it differentiates inside); the (2+1)-D PhysNet DiffNormalized frames.
DATA_TYPES = {
    "tscan": ("DiffNormalized", "Standardized"),
    "deepphys": ("DiffNormalized", "Standardized"),
    "efficientphys": ("Standardized",),
    "physnet_2p1d": ("DiffNormalized",),
}


@dataclass
class Row:
    """One line of the result table."""

    model: str
    data: str
    epochs: int
    seconds: float
    metric: str
    float_value: float
    int8_value: float | None
    target_met: str


def stacked(x: np.ndarray) -> np.ndarray:
    """Clips ``(N, C, T, H, W)`` -> frame-stacked ``(N, C, T*H, W)`` (a free reshape)."""
    n, c, t, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c, t * h, w))


def rppg_data(name: str, frames: int, args: argparse.Namespace) -> tuple[Any, Any]:
    """Training bundle (short videos) and evaluation bundle (long held-out videos, real PPG)."""
    from tinyprune.data import build_dataset

    common = {"data_types": DATA_TYPES[name], "chunk": frames, "size": 36, "seed": 0}
    train = build_dataset(
        "synthetic-rppg",
        n_train=args.n_train,
        n_val=1,
        n_test=1,
        clips_per_video=args.train_clips,
        real_ppg=False,
        **common,
    )
    evals = build_dataset(
        "synthetic-rppg",
        n_train=1,
        n_val=1,
        n_test=args.n_test,
        clips_per_video=args.eval_frames // frames,
        real_ppg=True,
        **common,
    )
    return train, evals


def video_hr_mae(bvp: np.ndarray, ds: Any, fs: float) -> float:
    """HR MAE over videos (:func:`tinyprune.metrics.video_hr`)."""
    from tinyprune.metrics import mae, video_hr

    return mae(*video_hr(bvp, ds.video, ds.hr_bpm, fs))


def torch_outputs(model: torch.nn.Module, x: np.ndarray, batch: int = 16) -> np.ndarray:
    """Float outputs of ``model`` on ``x`` in eval mode."""
    model.eval()
    with torch.no_grad():
        return np.concatenate(
            [model(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)]
        )


def int8_outputs(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Run the int8 model with LiteRT's reference kernels on float inputs (PyTorch layout)."""
    from firmware_export.calibration import to_channels_last
    from firmware_export.tflite_model import parse_tflite
    from firmware_export.verify import dequantize, quantize_input, run_litert

    m = parse_tflite(model_bytes)
    tin, tout = m.tensors[m.inputs[0]], m.tensors[m.outputs[0]]
    q = quantize_input(to_channels_last(x), tin.scale[0], tin.zero_point[0])
    out = run_litert(model_bytes, q, "ref", timeout=1800)
    return dequantize(out, tout.scale[0], tout.zero_point[0]).reshape(len(x), -1)


def train(
    model: torch.nn.Module,
    bundle: Any,
    x_train: np.ndarray,
    epochs: int,
    lr: float,
    batch_size: int,
) -> float:
    """Train with the library loop on ``x_train`` (the bundle's labels); return seconds."""
    from torch.utils.data import DataLoader, TensorDataset

    from tinyprune.app.tasks import task_loss
    from tinyprune.training import TrainConfig, fit

    ds = TensorDataset(torch.from_numpy(x_train), torch.from_numpy(np.asarray(bundle.train.y)))
    loader = DataLoader(
        ds, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=0)
    start = time.perf_counter()
    fit(model, loader, cfg, loss_fn=task_loss(bundle.task), progress=sys.stderr.isatty())
    return time.perf_counter() - start


def export_int8(model: torch.nn.Module, calib: np.ndarray, out: Path) -> bytes:
    """Export to int8 for a Cortex-M7; return the ``.tflite`` bytes."""
    from firmware_export import ExportOptions, export

    result = export(
        model.eval(),
        calib,
        target="cortex-m7",
        out_dir=out,
        options=ExportOptions(calib_cap=len(calib), verify_samples=8),
    )
    log(
        "  export: tflm_vs_litert_ref max "
        f"{result.report['verify']['tflm_vs_litert_ref']['max_abs']}"
        f" LSB, int8 vs float cos {result.report['verify']['int8_vs_float']['cos']:.4f}, "
        f"flash {result.report['flash_bytes']} B, arena {result.report['arena_bytes']} B"
    )
    return (out / "model_int8.tflite").read_bytes()


def bench_rppg(name: str, args: argparse.Namespace, out: Path) -> list[Row]:
    """Train one rPPG net; rows for held-out synthetic subjects and for the real-PPG clips."""
    from tinyprune.models import create_model

    torch.manual_seed(0)
    model = create_model(name, frames=args.frames)
    log(f"{name}: generating synthetic-rppg ({args.n_train} training videos) ...")
    train_set, evals = rppg_data(name, args.frames, args)
    x_train = stacked(train_set.train.x)
    log(
        f"{name}: training {args.rppg_epochs} epochs on {len(x_train)} clips "
        f"of {args.frames} frames"
    )
    seconds = train(model, train_set, x_train, args.rppg_epochs, args.rppg_lr, 8)
    sets = {"synthetic held-out": evals.test, "real PPG (heartpy)": evals.extras["real_ppg"]}
    floats = {
        k: video_hr_mae(torch_outputs(model, stacked(ds.x)), ds, evals.fs) for k, ds in sets.items()
    }
    int8: dict[str, float | None] = dict.fromkeys(sets)
    if not args.skip_export:
        tfl = export_int8(model, x_train[: args.calib], out / name)
        int8 = {
            k: video_hr_mae(int8_outputs(tfl, stacked(ds.x)), ds, evals.fs)
            for k, ds in sets.items()
        }
    rows = []
    for k in sets:
        ok = seconds <= RPPG_TIME_TARGET and (
            k != "synthetic held-out" or floats[k] <= RPPG_MAE_TARGET
        )
        close = int8[k] is not None and abs(int8[k] - floats[k]) <= INT8_HR_TOLERANCE  # type: ignore[operator]
        met = ("yes" if ok else "no") + (
            "" if int8[k] is None else f" / int8 {'yes' if close else 'no'}"
        )
        if k != "synthetic held-out":
            met = "(no target)" + ("" if int8[k] is None else f" / int8 {'yes' if close else 'no'}")
        rows.append(Row(name, k, args.rppg_epochs, seconds, "HR MAE bpm", floats[k], int8[k], met))
    return rows


def bench_digits(args: argparse.Namespace, out: Path) -> Row:
    """Train micro_cnn on digits; float and int8 test accuracy."""
    from tinyprune.data import build_dataset
    from tinyprune.metrics import top1_accuracy
    from tinyprune.models import create_model

    torch.manual_seed(0)
    bundle = build_dataset("digits")
    model = create_model("micro_cnn")
    log(f"micro_cnn: training {args.digits_epochs} epochs on {len(bundle.train)} digits")
    seconds = train(model, bundle, bundle.train.x, args.digits_epochs, 3e-3, 32)
    x, y = bundle.test.x, np.asarray(bundle.test.y)
    acc = float(top1_accuracy(torch_outputs(model, x), y))
    acc8 = None
    if not args.skip_export:
        tfl = export_int8(model, bundle.calibration_batches(128), out / "micro_cnn")
        acc8 = float(top1_accuracy(int8_outputs(tfl, x), y))
    met = "yes" if acc >= DIGITS_ACC_TARGET and seconds <= DIGITS_TIME_TARGET else "no"
    return Row(
        "micro_cnn", "digits (test)", args.digits_epochs, seconds, "accuracy", acc, acc8, met
    )


def table(rows: list[Row]) -> str:
    """The result table (Markdown)."""
    head = (
        "| model | data | epochs | train wall s | metric | float | int8 (LiteRT ref) "
        "| target met |\n"
        "|---|---|---:|---:|---|---:|---:|---|"
    )
    lines = [head]
    for r in rows:
        i8 = "n/a" if r.int8_value is None else f"{r.int8_value:.3f}"
        lines.append(
            f"| {r.model} | {r.data} | {r.epochs} | {r.seconds:.0f} | {r.metric} | "
            f"{r.float_value:.3f} | {i8} | {r.target_met} |"
        )
    return "\n".join(lines)


def log(msg: str) -> None:
    """Progress on stderr (stdout carries only the table)."""
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; the defaults are the documented run."""
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--rppg-models", nargs="*", default=["tscan"], choices=sorted(DATA_TYPES))
    p.add_argument(
        "--frames",
        type=int,
        default=10,
        help="frames per clip (model and data); 10 keeps TS-CAN within a 1 MiB TFLM arena",
    )
    p.add_argument("--rppg-epochs", type=int, default=8)
    p.add_argument("--rppg-lr", type=float, default=1e-3)
    p.add_argument("--n-train", type=int, default=8, help="synthetic training videos")
    p.add_argument("--train-clips", type=int, default=12, help="clips per training video")
    p.add_argument("--n-test", type=int, default=4, help="held-out synthetic subjects")
    p.add_argument("--eval-frames", type=int, default=510, help="frames per evaluation video")
    p.add_argument("--calib", type=int, default=32, help="int8 calibration clips")
    p.add_argument("--digits-epochs", type=int, default=20)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)"
    )
    p.add_argument("--skip-export", action="store_true", help="float metrics only")
    p.add_argument("--out", default=None, help="keep the export folders here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the bench and print the table."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        rows = [bench_digits(args, out)]
        for name in args.rppg_models:
            rows += bench_rppg(name, args, out)
    print(table(rows))
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s (2-core CPU, shared)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
