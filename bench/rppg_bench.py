"""rPPG nets trained on synthetic data only, scored on PURE/UBFC-format videos of real PPG.

The fixtures are the repo's own: real face photos (the astronaut; lfw faces in the held-out set)
modulated by heartpy's three real contact-PPG recordings (several segments), written by
``tinyprune.data.synthetic.write_pure`` / ``write_ubfc``
and read back through the PURE and UBFC-rPPG loaders (face detection on, as for real data).
TS-CAN (``zoo:tscan``) and ``physnet_2p1d`` are trained briefly on ``synthetic-rppg`` (seeded, CPU)
with the zoo bench's recipe; POS, CHROM and GREEN (``tinyprune.runtime.unsupervised``) run on the
same face crops. HR per video through ``tinyprune.metrics.video_table`` (concatenated predictions,
``tinyprune.runtime.hr.estimate_hr``); MAE against the device HR the formats carry (PURE
``pulseRate``, UBFC HR row). With the ``export`` extra each net also goes through
``firmware_export.export(target="rpi4")`` and runs int8 in LiteRT (XNNPACK). One Markdown table
on stdout, progress on stderr.

    /work/venv/bin/python bench/rppg_bench.py [--models tscan physnet_2p1d] [--skip-export]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the zoo bench's helpers
import zoo_bench  # noqa: E402

#: (face, heartpy recording, start s) per video. "bench": the first fixtures (astronaut face);
#: "held-out": other faces (lfw) and segments that overlap none of them, chosen only for a
#: clean label (every beat interval within 30 % of the median: no signal loss in the recording),
#: never for how any method reads them.
SETS = {
    "bench": [
        ("astronaut", 0, 0.0),
        ("astronaut", 1, 40.0),
        ("astronaut", 1, 60.0),
        ("astronaut", 2, 100.0),
        ("astronaut", 2, 300.0),
        ("astronaut", 2, 400.0),
    ],
    "held-out": [
        ("lfw:60", 1, 95.0),
        ("lfw:71", 2, 0.0),
        ("astronaut", 2, 200.0),
        ("lfw:83", 2, 250.0),
        ("astronaut", 2, 550.0),
        ("lfw:95", 2, 625.0),
    ],
}
SEEDS = {"bench": 900, "held-out": 1900}
FRAMES = {"tscan": 10, "physnet_2p1d": 32}
#: Training budget per net (synthetic videos, clips per video, epochs). physnet_2p1d learns
#: nothing here that reads these videos (one fixed waveform per window): larger budgets tried
#: (16 x 8 clips x 30 epochs; 12 x 2 x 12 at lr 3e-3 with 32 or 64 frames, noisy or clean
#: training videos) read 23-38 bpm MAE on the bench set too, so it keeps the short budget.
RECIPES = {"tscan": (8, 12, 8), "physnet_2p1d": (8, 3, 8)}
UNSUPERVISED = ("pos", "chrom", "green")


def write_fixtures(root: Path, duration_s: float) -> None:
    """One video per (face, heartpy segment), written in both PURE and UBFC-rPPG layout."""
    from tinyprune.data.synthetic import SyntheticConfig, generate, write_pure, write_ubfc

    for name, videos in SETS.items():
        for i, (face, k, start) in enumerate(videos, start=1):
            dur = min(duration_s, 22.0) if k == 0 else duration_s
            video = generate(
                SyntheticConfig(
                    seed=SEEDS[name] + i,
                    duration_s=dur,
                    face=face,
                    pulse=f"heartpy:{k}",
                    pulse_start_s=start,
                    nuisances=("static", "camera"),
                )
            )
            write_pure(video, root / name / "PURE", i, 1)
            write_ubfc(video, root / name / "UBFC", i)


def sources(root: Path, fmt: str) -> list[Any]:
    """The fixture videos of one format as loader ``VideoSource`` items (lazy frames)."""
    from tinyprune.data import pure, ubfc
    from tinyprune.data.builders import VideoSource

    if fmt == "PURE":
        seqs = [pure.read_sequence(root / "PURE", n) for n in pure.list_sequences(root / "PURE")]
        return [VideoSource(s.frames(), s.bvp(), s.fs, s.device_hr(), s.name) for s in seqs]
    subs = [ubfc.read_subject(root / "UBFC", n) for n in ubfc.list_subjects(root / "UBFC")]
    return [VideoSource(s.frames(), s.ppg, s.fs, s.device_hr(), s.name) for s in subs]


def clips(root: Path, fmt: str, model: str) -> Any:
    """Face-cropped, normalised clips of one format in the model's input contract."""
    from tinyprune.data.builders import _clips_from_videos
    from tinyprune.data.preprocess import PreprocessConfig

    cfg = PreprocessConfig(
        size=36, chunk=FRAMES[model], data_types=zoo_bench.DATA_TYPES[model], detect=True
    )
    return _clips_from_videos(sources(root, fmt), cfg)


def unsupervised_mae(root: Path, fmt: str) -> dict[str, float]:
    """HR MAE (vs device HR) of POS / CHROM / GREEN on the 36x36 face crops of each video."""
    from tinyprune.data.preprocess import PreprocessConfig, face_crop_video
    from tinyprune.metrics import mae
    from tinyprune.runtime.hr import estimate_hr
    from tinyprune.runtime.unsupervised import unsupervised_bvp

    cfg = PreprocessConfig(size=36, chunk=10, detect=True)
    preds: dict[str, list[float]] = {m: [] for m in UNSUPERVISED}
    ref = []
    for src in sources(root, fmt):
        rgb = face_crop_video(src.frames, cfg).reshape(-1, 36 * 36, 3).mean(axis=1)
        ref.append(src.device_hr)
        for m in UNSUPERVISED:
            preds[m].append(estimate_hr(unsupervised_bvp(m, rgb, src.fs), src.fs).bpm)
    for m, p in preds.items():
        zoo_bench.log(
            f"  {fmt} {m} pred/device: "
            + ", ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(p, ref, strict=True))
        )
    return {m: mae(p, ref) for m, p in preds.items()}


def int8_rpi4(model: torch.nn.Module, calib: np.ndarray, out: Path) -> bytes | str | None:
    """Export for ``rpi4`` (LiteRT int8); None without the export extra, the reason if refused."""
    if importlib.util.find_spec("onnx2tf") is None:
        return None
    from firmware_export import ExportOptions, export
    from tinyprune.errors import VerificationError

    try:
        export(
            model.eval(),
            calib,
            target="rpi4",
            out_dir=out,
            options=ExportOptions(calib_cap=len(calib), verify_samples=8),
        )
    except VerificationError as e:  # a net whose output ignores its input fails the gate
        zoo_bench.log(f"  export refused: {e}")
        return "export refused (verification)"
    return (out / "model_int8.tflite").read_bytes()


def run_int8(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Int8 outputs (dequantized) from LiteRT with XNNPACK on float inputs (PyTorch layout)."""
    from firmware_export.calibration import to_channels_last
    from firmware_export.tflite_model import parse_tflite
    from firmware_export.verify import dequantize, quantize_input, run_litert

    m = parse_tflite(model_bytes)
    tin, tout = m.tensors[m.inputs[0]], m.tensors[m.outputs[0]]
    q = quantize_input(to_channels_last(x), tin.scale[0], tin.zero_point[0])
    out = run_litert(model_bytes, q, "xnnpack", timeout=1800)
    return dequantize(out, tout.scale[0], tout.zero_point[0]).reshape(len(x), -1)


def score(bvp: np.ndarray, ds: Any) -> tuple[float, float]:
    """(MAE vs device HR, MAE of the label HR vs device HR) over the videos of ``ds``."""
    from tinyprune.metrics import video_metrics, video_table

    rows = video_table(
        bvp, ds.video, ds.hr_bpm, ds.fs, device_hr=ds.device_hr, names=ds.video_names
    )
    m = video_metrics(rows)
    zoo_bench.log(
        "  " + ", ".join(f"{r['video']} {r['pred_hr']:.1f}/{r['ref_hr']:.1f}" for r in rows)
    )
    return float(m["mae"]), float(m["label_vs_device_mae"])


def bench_model(name: str, root: Path, args: argparse.Namespace, out: Path) -> list[list[str]]:
    """Train ``name`` on synthetic data; rows (format, float MAE, int8 MAE, label MAE)."""
    from tinyprune.models import create_model

    torch.manual_seed(0)
    frames = FRAMES[name]
    model = create_model(name, frames=frames)
    n_train, train_clips, epochs = RECIPES[name]
    ns = argparse.Namespace(
        n_train=n_train, train_clips=train_clips, n_test=1, eval_frames=frames * 2
    )
    train_set, _ = zoo_bench.rppg_data(name, frames, ns)
    x_train = zoo_bench.stacked(train_set.train.x)
    zoo_bench.log(f"{name}: training {epochs} epochs on {len(x_train)} clips of {frames}")
    seconds = zoo_bench.train(model, train_set, x_train, epochs, 1e-3, 8)
    tfl = None if args.skip_export else int8_rpi4(model, x_train[: args.calib], out / name)
    rows = []
    seconds_label = f"{seconds:.0f} ({epochs} ep, {len(x_train)} clips)"
    for set_name in SETS:
        for fmt in ("PURE", "UBFC"):
            ds = clips(root / set_name, fmt, name)
            x = zoo_bench.stacked(ds.x)
            f_mae, lab = score(zoo_bench.torch_outputs(model, x), ds)
            i8 = tfl if not isinstance(tfl, bytes) else f"{score(run_int8(tfl, x), ds)[0]:.2f}"
            i8 = "n/a" if i8 is None else i8
            row = [name, set_name, fmt, seconds_label, f"{f_mae:.2f}", i8, f"{lab:.2f}"]
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Write the fixtures, run every method, print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=list(FRAMES), choices=sorted(FRAMES))
    p.add_argument("--duration", type=float, default=30.0, help="seconds per fixture video")
    p.add_argument("--calib", type=int, default=32)
    p.add_argument("--skip-export", action="store_true")
    p.add_argument(
        "--fixtures", type=Path, help="keep the fixture videos here (reused when complete)"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.fixtures or Path(tmp)
        n = sum(len(v) for v in SETS.values())
        if (root / "complete").is_file():
            zoo_bench.log(f"reusing the fixture videos in {root}")
        else:
            zoo_bench.log(f"writing {n} PURE + {n} UBFC fixture videos ...")
            write_fixtures(root, args.duration)
            (root / "complete").write_text(f"{args.duration}\n")
        for set_name in SETS:
            for fmt in ("PURE", "UBFC"):
                for m, v in unsupervised_mae(root / set_name, fmt).items():
                    rows.append([m.upper(), set_name, fmt, "0", f"{v:.2f}", "n/a", ""])
        for name in args.models:
            rows += bench_model(name, root, args, root / "export")
    head = (
        "| method | set | format | train s | HR MAE float | HR MAE int8 (LiteRT XNNPACK) "
        "| label vs device MAE |"
    )
    print(head + "\n|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(
        f"\n{', '.join(f'{k}: {len(v)}' for k, v in SETS.items())} videos per format; MAE in "
        f"bpm against the device HR; total {time.perf_counter() - start:.0f} s (2-core CPU, shared)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
