"""The one entry point, ``tinyprune``: parse, build configs, call one library function, map
errors to exit codes (0 ok, 1 bug, 2 bad input, 3 over budget, 4 unsupported op, 5 verification).

Logs and progress go to stderr; stdout carries only the result (the run folder, or JSON).
Heavy libraries are imported inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from tinyprune import __version__
from tinyprune.errors import BudgetExceededError, TinypruneError

log = logging.getLogger("tinyprune")

EPILOG = """exit codes: 0 success, 1 internal error, 2 usage or bad input, 3 over budget
(artifacts and report still written), 4 unsupported on the target (nothing emitted),
5 verification failed.

example:
  tinyprune export examples/tiny_cnn.py:build --calib calib.npy --target cortex-m4 --out run
"""


def _add_export_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        default="cortex-m4",
        help="device profile name (see `tinyprune targets`) or a TOML profile path",
    )
    p.add_argument(
        "--tflm-tolerance",
        type=int,
        default=0,
        metavar="LSB",
        help="accepted TFLM vs LiteRT reference difference (expected bit-identical)",
    )
    p.add_argument(
        "--float-tolerance",
        type=float,
        default=1e-3,
        help="relative max-abs error accepted between torch, ONNX Runtime and float TFLite",
    )
    p.add_argument(
        "--min-cosine",
        type=float,
        default=0.90,
        help="lowest accepted cosine similarity of int8 vs float outputs",
    )
    p.add_argument(
        "--arena-margin",
        type=float,
        default=0.10,
        metavar="FRACTION",
        help="margin added to the measured TFLM arena in the header (32-bit targets, CMSIS-NN)",
    )
    p.add_argument("--name", default=None, help="C identifier stem (default: the model's name)")


def _export_options(args: argparse.Namespace, **extra: Any) -> Any:
    from firmware_export.pipeline import ExportOptions

    return ExportOptions(
        tflm_tolerance_lsb=args.tflm_tolerance,
        float_tolerance=args.float_tolerance,
        min_cosine=args.min_cosine,
        arena_margin_fraction=args.arena_margin,
        name=args.name,
        **extra,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="tinyprune",
        description="Prune PyTorch networks and ship them to microcontrollers: "
        "verified int8 TFLite, TFLM C arrays and a flash/RAM/compute budget report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tinyprune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "export",
        formatter_class=fmt,
        help="PyTorch/ONNX model -> verified int8 TFLite, C arrays and a budget report",
    )
    p.add_argument(
        "model",
        help="zoo:NAME, file.py:factory, package.module:factory, .pt2, .onnx, "
        "or a Keras .keras/.h5 file or SavedModel folder (calibration NHWC)",
    )
    p.add_argument("--calib", required=True, help=".npy float32 samples, (N,C,H,W) or (N,C,T,H,W)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--calib-cap", type=int, default=512, help="most calibration samples used")
    p.add_argument(
        "--verify-samples", type=int, default=32, help="samples run through every runtime"
    )
    p.add_argument("--json", action="store_true", help="print report.json on stdout")
    _add_export_options(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "report",
        formatter_class=fmt,
        help="re-check a run folder or any .tflite against a device profile",
    )
    p.add_argument("path", help="run folder (with model_int8.tflite) or a .tflite file")
    p.add_argument(
        "--out", default=None, help="where to write report.* (default: beside the model)"
    )
    p.add_argument("--json", action="store_true", help="print report.json on stdout")
    _add_export_options(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("targets", help="list the built-in device profiles")
    p.set_defaults(func=cmd_targets)
    _add_runtime_commands(sub, fmt)
    _add_library_commands(sub, fmt)
    return parser


def _add_library_commands(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """Subcommands backed by the tinyprune library (zoo, data, training, pruning)."""
    try:
        from tinyprune import commands
    except ImportError as e:  # a torch-free install ("tinyprune[pi]"): runtime commands only
        log.debug("training/pruning commands unavailable: %s", e)
        return
    commands.add_subcommands(sub, fmt)


def _add_runtime_commands(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """``infer`` and ``bench-runtime``: the torch-free Raspberry Pi side (tinyprune.runtime)."""
    p = sub.add_parser(
        "infer",
        formatter_class=fmt,
        help="heart rate from a video/camera/frames/PURE/UBFC with an int8 model, or image labels",
    )
    p.add_argument("model", nargs="?", help="run/export folder or .tflite (not needed for pos/...)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--video", help="video file (MJPG/mp4/uncompressed AVI)")
    src.add_argument("--camera", type=int, metavar="N", help="camera index (live terminal line)")
    src.add_argument("--frames", metavar="DIR", help="folder of PNG/JPEG frames (see --fps)")
    src.add_argument("--data", metavar="pure:DIR|ubfc:DIR", help="a PURE or UBFC recording")
    src.add_argument("--images", nargs="+", metavar="IMG", help="image files (vision models)")
    p.add_argument("--method", default="net", choices=("net", "pos", "chrom", "green"))
    p.add_argument("--threads", type=int, default=1, help="LiteRT XNNPACK threads")
    p.add_argument("--fps", type=float, default=None, help="override the source's frame rate")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--top-k", type=int, default=5, help="labels per image (vision models)")
    p.add_argument(
        "--out", default=None, help="folder for readings.jsonl/.csv, plot.png, infer.html"
    )
    p.add_argument(
        "--format", default="jsonl", choices=("jsonl", "csv", "json"), help="what stdout carries"
    )
    p.set_defaults(func=cmd_infer)
    p = sub.add_parser(
        "bench-runtime",
        formatter_class=fmt,
        help="latency/throughput of LiteRT int8 (XNNPACK 1/2/4 threads, reference), ONNX Runtime, "
        "PyTorch, end to end",
    )
    p.add_argument("model", help="run/export folder or .tflite")
    p.add_argument("--video", default=None, help="video for the end-to-end frames/s")
    p.add_argument("--seconds", type=float, default=1.0, help="time per runtime")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_bench_runtime)


def cmd_infer(args: argparse.Namespace) -> int:
    """``tinyprune infer``."""
    from tinyprune.runtime.infer import InferRequest, run_infer
    from tinyprune.runtime.output import readings_csv, readings_jsonl, write_outputs

    req = InferRequest(
        args.model, video=args.video, camera=args.camera, frames=args.frames, data=args.data,
        images=tuple(args.images or ()), method=args.method, threads=args.threads,
        fps=args.fps, max_frames=args.max_frames, top_k=args.top_k,
    )
    result = run_infer(req)
    if isinstance(result, list):
        print(json.dumps(result, indent=2))
        return 0
    if args.out:
        write_outputs(result, args.out)
    if args.format == "csv":
        print(readings_csv(result), end="")
    elif args.format == "json":
        print(json.dumps(result))
    else:
        print(readings_jsonl(result), end="")
    return 0


def cmd_bench_runtime(args: argparse.Namespace) -> int:
    """``tinyprune bench-runtime``."""
    from tinyprune.runtime.bench import bench_runtime, format_table

    result = bench_runtime(args.model, video=args.video, min_s=args.seconds)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def _progress(args: argparse.Namespace) -> Any:
    from rich.console import Console

    console = Console(stderr=True)
    status = console.status("starting", spinner="dots")

    def on_stage(name: str) -> None:
        status.update(f"[bold]export[/]: {name}")

    return console, status, on_stage


def _print_summary(result: Any, console: Any) -> None:
    from firmware_export.report import summary_lines

    for line in summary_lines(result.report):
        console.print(line, highlight=False, markup=False)
    if result.report.get("float_ops"):
        console.print(
            f"warning: ops still computing in float: {', '.join(result.report['float_ops'])}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if result.report.get("sparsity_note"):
        console.print(
            f"note: {result.report['sparsity_note']}", highlight=False, markup=False, soft_wrap=True
        )


def _run_job(job: Any, args: argparse.Namespace) -> int:
    """Run an export-like job under a progress spinner; print the summary and the result."""
    console, status, on_stage = _progress(args)
    with status:
        try:
            result = job(on_stage)
        except BudgetExceededError as e:
            status.stop()
            _print_summary(e.report, console)
            raise
    _print_summary(result, console)
    print(json.dumps(result.report, indent=2) if args.json else result.out_dir)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``tinyprune export``."""
    from firmware_export.pipeline import export

    opts = _export_options(args, calib_cap=args.calib_cap, verify_samples=args.verify_samples)
    return _run_job(
        lambda on_stage: export(
            args.model,
            args.calib,
            target=args.target,
            out_dir=args.out,
            options=opts,
            on_stage=on_stage,
        ),
        args,
    )


def cmd_report(args: argparse.Namespace) -> int:
    """``tinyprune report``."""
    from firmware_export.recheck import report_existing

    return _run_job(
        lambda on_stage: report_existing(
            args.path,
            target=args.target,
            out_dir=args.out,
            options=_export_options(args),
            on_stage=on_stage,
        ),
        args,
    )


def cmd_targets(args: argparse.Namespace) -> int:
    """``tinyprune targets``."""
    from firmware_export.budget import list_profiles, load_profile

    for name in list_profiles():
        p = load_profile(name)
        print(
            f"{name:14s} {p.runtime:7s} flash {p.flash_bytes // 1024:>8d} KiB  "
            f"RAM {p.ram_bytes // 1024:>8d} KiB  {p.clock_mhz:>5g} MHz  {p.description}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except TinypruneError as e:
        if args.verbose:
            traceback.print_exc()
        print(f"tinyprune: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("tinyprune: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(
            "tinyprune: internal error (a bug): please report it with the traceback above",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
