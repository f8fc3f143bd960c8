"""How much slower is tinyprune's export than the bare library calls that do the same conversion?

For three model sizes this bench times, in one process and interleaved (bare, tinyprune, bare, ...):

* tinyprune: ``firmware_export.export`` (its onnx + convert + quantize stages, from
  ``result.timings``);
* bare: ``torch.onnx.export`` (opset 17, ``dynamo=False``) -> ``onnxsim.simplify`` in-process ->
  ``onnx2tf.convert(not_use_onnxsim=True, ...)`` -> ``TFLiteConverter`` full int8 with the same
  calibration data. onnx2tf reads its sample images from the working directory, so the bare run
  works in its own folder holding ``calibration_image_sample_data_20x128x128x3_float32.npy`` made
  from the calibration data (NHWC, repeated to 20): nothing goes to the network.

It also prints tinyprune's verification time (check + verify + arena) and the arena figures.
The ratio target (tinyprune / bare <= 1.15) is printed as PASS/FAIL; it never fails the process.

    /work/venv/bin/python bench/export_bench.py --repeats 2 [--quick] [--out DIR]
    python bench/export_bench.py --rppg     # the rPPG table (bench/rppg_cases.py)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TARGET_RATIO = 1.15
CONVERSION_STAGES = ("onnx", "convert", "quantize")
VERIFY_STAGES = ("check", "verify", "arena")
ONNX2TF_SAMPLES_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


@dataclass(frozen=True)
class Case:
    """One model size: a name, a factory and the per-sample PyTorch input shape."""

    name: str
    build: Callable[[], Any]
    shape: tuple[int, int, int]


def cases() -> list[Case]:
    """Small, medium and large: the example CNN, a narrow ResNet-20, a MobileNetV2 (0.35)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from memory_cases import seeded_model as seeded
    from tiny_cnn import build as tiny_cnn

    return [
        Case("tiny_cnn 16x16", tiny_cnn, (1, 16, 16)),
        Case("resnet20 w8 32x32", seeded("resnet20", width=8, input_size=32), (3, 32, 32)),
        Case(
            "mobilenetv2 x0.35 32x32",
            seeded("mobilenetv2", num_classes=10, width_mult=0.35, input_size=32),
            (3, 32, 32),
        ),
    ]


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def bare_conversion(model: Any, calib: np.ndarray, work: Path) -> dict[str, float]:
    """The same conversion as tinyprune's stages 1-3, with the libraries called directly."""
    import onnx
    import onnx2tf
    import onnxsim
    import tensorflow as tf
    import torch

    times: dict[str, float] = {}
    work.mkdir(parents=True, exist_ok=True)
    onnx_path, saved = work / "model.onnx", work / "saved_model"
    t0 = time.perf_counter()
    x = torch.from_numpy(calib[:1])
    with torch.no_grad():
        torch.onnx.export(
            model,
            (x,),
            str(onnx_path),
            opset_version=17,
            dynamo=False,
            input_names=["input"],
            output_names=["output"],
            do_constant_folding=True,
        )
    simplified, ok = onnxsim.simplify(onnx.load(str(onnx_path)))
    if ok:
        onnx.save(simplified, str(onnx_path))
    times["onnx"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    nhwc = np.ascontiguousarray(np.moveaxis(calib, 1, -1))  # NHWC (NDHWC for clips)
    reps = -(-20 // len(nhwc))
    np.save(work / ONNX2TF_SAMPLES_FILE, np.concatenate([nhwc] * reps)[:20].astype(np.float32))
    with _cwd(work), contextlib.redirect_stdout(io.StringIO()):
        onnx2tf.convert(
            input_onnx_file_path=str(onnx_path),
            output_folder_path=str(saved),
            output_signaturedefs=True,
            copy_onnx_input_output_names_to_tflite=True,
            non_verbose=True,
            not_use_onnxsim=True,
        )
    times["convert"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    converter.representative_dataset = lambda: ([s[None]] for s in nhwc)
    (work / "model_int8.tflite").write_bytes(converter.convert())
    times["quantize"] = time.perf_counter() - t0
    return times


def tinyprune_export(
    model: Any, calib: np.ndarray, work: Path
) -> tuple[dict[str, float], dict[str, Any]]:
    """tinyprune's full export; return its stage timings and report."""
    from firmware_export import ExportOptions, export

    opts = ExportOptions(calib_cap=len(calib), verify_samples=min(len(calib), 16))
    res = export(
        model, calib, target="cortex-m7", out_dir=work, options=opts, raise_on_budget=False
    )
    return res.timings, res.report


def measure(case: Case, repeats: int, n_calib: int, out: Path) -> dict[str, Any]:
    """Run bare and tinyprune ``repeats`` times each, alternating.

    Returns medians and arena figures.
    """
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((n_calib, *case.shape)).astype(np.float32)
    model = case.build()
    slug = case.name.split()[0]
    bare, tp, ver = [], [], []
    stages: dict[str, list[float]] = {
        f"{w}_{s}": [] for w in ("bare", "tp") for s in CONVERSION_STAGES
    }
    report: dict[str, Any] = {}
    for r in range(repeats):
        order = ("bare", "tp") if r % 2 == 0 else ("tp", "bare")
        for who in order:
            print(
                f"[bench] {case.name}: repeat {r + 1}/{repeats}, {who}", file=sys.stderr, flush=True
            )
            if who == "bare":
                times = bare_conversion(model, calib, out / slug / f"bare_{r}")
                bare.append(sum(times[s] for s in CONVERSION_STAGES))
            else:
                times, report = tinyprune_export(model, calib, out / slug / f"tinyprune_{r}")
                tp.append(sum(times[s] for s in CONVERSION_STAGES))
                ver.append(sum(times.get(s, 0.0) for s in VERIFY_STAGES))
            for s in CONVERSION_STAGES:
                stages[f"{who}_{s}"].append(times[s])
    arena = report["arena"]
    return {
        "tp": statistics.median(tp),
        "bare": statistics.median(bare),
        "verify": statistics.median(ver),
        "stages": {k: statistics.median(v) for k, v in stages.items()},
        "header": arena["header_bytes"],
        "smallest": report["arena_bytes"],
        "lower": arena["lower_bound_bytes"],
        "measured": arena.get("measured", True),
        "plan": arena.get("plan"),
    }


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "n/a"


def render(rows: list[tuple[Case, dict[str, Any] | str]], repeats: int) -> str:
    """Markdown: one row per model (or its error), then the per-stage medians."""
    head = (
        "| model | tinyprune conv s | bare conv s | ratio | <= 1.15 "
        "| verify s (check+verify+arena) "
        "| arena reported B | TFLM smallest B | lower bound B "
        "| reported/smallest | lower/smallest |"
    )
    lines = [
        f"Medians of {repeats} repeat(s), bare and tinyprune interleaved; "
        "conv = onnx + convert + quantize.",
        "",
        head,
        "|" + "---|" * 11,
    ]
    stage_lines = [
        "",
        "| model | "
        + " | ".join(f"{w} {s} s" for w in ("tp", "bare") for s in CONVERSION_STAGES)
        + " |",
        "|" + "---|" * 7,
    ]
    for case, m in rows:
        if isinstance(m, str):
            lines.append(f"| {case.name} | error: {m} |" + " |" * 9)
            continue
        ratio = m["tp"] / m["bare"]
        smallest = f"{m['smallest']:,}" + ("" if m["measured"] else " (est.)")
        lines.append(
            f"| {case.name} | {m['tp']:.2f} | {m['bare']:.2f} | {ratio:.3f} | "
            f"{'PASS' if ratio <= TARGET_RATIO else 'FAIL'} | {m['verify']:.2f} | "
            f"{m['header']:,} | "
            f"{smallest} | {m['lower']:,} | {_ratio(m['header'], m['smallest'])} | "
            f"{_ratio(m['lower'], m['smallest'])} |"
        )
        st = m["stages"]
        stage_lines.append(
            f"| {case.name} | "
            + " | ".join(f"{st[f'{w}_{s}']:.2f}" for w in ("tp", "bare") for s in CONVERSION_STAGES)
            + " |"
        )
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from memory_cases import render_memory, row_from_report

    plans = {
        c.name: row_from_report(m["plan"])
        for c, m in rows
        if not isinstance(m, str) and m.get("plan")
    }
    memory = ["", "Arena plan (export defaults: --memory-plan auto):", "", render_memory(plans)]
    return "\n".join(lines + stage_lines + (memory if plans else []))


def warm_up(case: Case, n_calib: int, out: Path) -> None:
    """Import the heavy libraries and run each side once untimed, so that neither side pays
    the first-call costs (imports, TF runtime and converter start-up) in its timings."""
    from firmware_export.convert import quiet_tensorflow

    quiet_tensorflow()  # same TF environment (oneDNN off, quiet) for both sides
    import onnx  # noqa: F401
    import onnx2tf  # noqa: F401
    import onnxsim  # noqa: F401
    import tensorflow  # noqa: F401
    import torch  # noqa: F401

    calib = np.random.default_rng(1).standard_normal((n_calib, *case.shape)).astype(np.float32)
    print("[bench] warm-up (untimed)", file=sys.stderr, flush=True)
    bare_conversion(case.build(), calib, out / "warmup" / "bare")
    tinyprune_export(case.build(), calib, out / "warmup" / "tinyprune")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every case and print the markdown table on stdout."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2, help="measurements per side (median is used)")
    p.add_argument(
        "--out", type=Path, default=None, help="work folder (default: a temp dir, removed)"
    )
    p.add_argument("--quick", action="store_true", help="only the smallest model")
    p.add_argument("--calib", type=int, default=16, help="calibration samples (seeded Gaussian)")
    p.add_argument(
        "--memory",
        action="store_true",
        help="only the arena table (online/offline head, bound, tails, smallest arenas) on "
        "tiny_cnn, resnet20 w8/w16, mobilenetv2 x0.35, ds_cnn, deepphys, tscan",
    )
    p.add_argument(
        "--models-dir", type=Path, default=None, help="--memory: cache of converted .tflite files"
    )
    p.add_argument(
        "--rppg",
        action="store_true",
        help="only the rPPG table (zoo 2-D nets, field-style nets, 3-D test nets; rpi4 and "
        "cortex-m7): conversion time vs the bare chain, float ops, flash, arena, centred cosine",
    )
    args = p.parse_args(argv)
    if args.memory:
        return memory_main(args.models_dir)
    if args.rppg:
        return rppg_main(args.out)
    if args.repeats < 1 or args.calib < 1:
        p.error(f"--repeats and --calib must be >= 1, got {args.repeats} and {args.calib}")
    out = args.out or Path(tempfile.mkdtemp(prefix="export-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    selected = cases()[:1] if args.quick else cases()
    rows: list[tuple[Case, dict[str, Any] | str]] = []
    try:
        warm_up(selected[0], args.calib, out)
        for case in selected:
            try:
                rows.append((case, measure(case, args.repeats, args.calib, out)))
            except Exception as e:  # one broken model must not hide the others' rows
                first = str(e).splitlines()[0] if str(e) else ""
                rows.append((case, f"{type(e).__name__}: {first}"[:160]))
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    print(render(rows, args.repeats))
    return 0


def memory_main(cache: Path | None) -> int:
    """The ``--memory`` table; one broken model does not hide the others' rows."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from memory_cases import memory_cases, memory_row, render_memory

    rows: dict[str, dict[str, Any] | str] = {}
    for name in memory_cases():
        print(f"[bench] memory: {name}", file=sys.stderr, flush=True)
        try:
            rows[name] = memory_row(name, cache)
        except Exception as e:  # noqa: BLE001
            rows[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]
    print(render_memory(rows))
    return 0


def rppg_main(out: Path | None) -> int:
    """The ``--rppg`` table; one failing model does not hide the others' rows."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from rppg_cases import RPPG_HEADER, render_row, render_rppg, rppg_cases, rppg_row

    work = out or Path(tempfile.mkdtemp(prefix="export-bench-rppg-"))
    cases = rppg_cases()
    try:
        first = next(iter(cases.values()))
        model, calib = first()
        print("[bench] warm-up (untimed)", file=sys.stderr, flush=True)
        try:  # the bare chain fails on most of these nets; the warm-up only loads libraries
            bare_conversion(model, calib, work / "warmup" / "bare")
        except BaseException as e:  # noqa: BLE001 - onnx2tf exits via SystemExit
            print(f"[bench] warm-up: bare chain fails ({type(e).__name__})", file=sys.stderr)
        tinyprune_export(model, calib, work / "warmup" / "tinyprune")
        rows = {}
        print(RPPG_HEADER, file=sys.stderr, flush=True)
        for name, make in cases.items():
            rows[name] = rppg_row(name, make, work)
            print(render_row(name, rows[name]), file=sys.stderr, flush=True)  # as it goes
    finally:
        if out is None:
            shutil.rmtree(work, ignore_errors=True)
    print("\n=== rPPG table ===\n")  # (torch.onnx prints its IR above when the bare chain fails)
    print(render_rppg(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
