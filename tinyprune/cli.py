"""The one entry point, ``tinyprune``: every subcommand's parser and its ``cmd_*`` function.

A ``cmd_*`` builds a config, calls one ``tinyprune.app`` function and prints its result.
Errors map to exit codes (0 ok, 1 bug, 2 bad input, 3 over budget, 4 unsupported op,
5 verification, 130 interrupted). Argparse defaults are read from the config dataclasses
(``tinyprune.config``, ``firmware_export.options``), so every default is defined once.

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
from tinyprune.config import (
    DESearchConfig,
    EvalConfig,
    FinetuneConfig,
    PruneConfig,
    TrainRunConfig,
    load_toml,
    parse_options,
)
from tinyprune.errors import BudgetExceededError, ConfigError, TinypruneError

log = logging.getLogger("tinyprune")

EPILOG = """exit codes: 0 success, 1 internal error, 2 usage or bad input, 3 over budget
(artifacts and report still written), 4 unsupported on the target (nothing emitted),
5 verification failed.

example:
  tinyprune export examples/tiny_cnn.py:build --calib calib.npy --target cortex-m4 --out run
"""


FMT = argparse.ArgumentDefaultsHelpFormatter
TRAIN = TrainRunConfig()
PRUNE = PruneConfig()
DE = DESearchConfig()
FINETUNE = FinetuneConfig()
EVAL = EvalConfig()


def _export_defaults() -> Any:
    from firmware_export.options import ExportOptions

    return ExportOptions()


def _add_export_options(p: argparse.ArgumentParser) -> None:
    from firmware_export.options import DEFAULT_TARGET

    d = _export_defaults()
    p.add_argument(
        "--target",
        default=DEFAULT_TARGET,
        help="device profile name (see `tinyprune targets`) or a TOML profile path",
    )
    p.add_argument(
        "--tflm-tolerance",
        type=int,
        default=d.tflm_tolerance_lsb,
        metavar="LSB",
        help="accepted TFLM vs LiteRT reference difference (expected bit-identical)",
    )
    p.add_argument(
        "--float-tolerance",
        type=float,
        default=d.float_tolerance,
        help="relative max-abs error accepted between torch, ONNX Runtime and float TFLite",
    )
    p.add_argument(
        "--min-cosine",
        type=float,
        default=d.min_cosine,
        help="lowest accepted cosine similarity of int8 vs float outputs",
    )
    p.add_argument(
        "--min-centred-cosine",
        type=float,
        default=d.min_centred_cosine,
        help="lowest accepted int8 vs float cosine of the outputs minus their mean over the "
        "samples, gated where an output varies across them (default: --min-cosine)",
    )
    p.add_argument(
        "--arena-margin",
        type=float,
        default=d.arena_margin_fraction,
        metavar="FRACTION",
        help="explicit extra fraction on top of the header's computed arena (32-bit head + "
        "tail + CMSIS-NN scratch)",
    )
    p.add_argument(
        "--memory-plan",
        choices=("auto", "offline", "online"),
        default=d.memory_plan,
        help="embed an optimal offline arena plan in the model: auto = when it beats TFLM's "
        "online planner, offline = always, online = never",
    )
    p.add_argument(
        "--rewrite-3d",
        choices=("auto", "off"),
        default=d.rewrite_3d,
        help="run 3-D layers (Conv3d, 3-D pooling, ConvTranspose3d in time, ...) as exact 2-D "
        "ops, time as batch: auto = for TFLM targets, and for LiteRT when no 3-D op is left "
        "(so the model can be fully int8); off = export 3-D ops as they are",
    )
    p.add_argument(
        "--space-to-depth",
        choices=("auto", "off"),
        default=d.space_to_depth,
        help="LiteRT targets: run narrow stride-1 convolutions (<= 16 channels, even height and "
        "width) on 2x2 pixel blocks, which XNNPACK's int8 kernels run faster; off = as they are",
    )
    p.add_argument("--name", default=d.name, help="C identifier stem (default: the model's name)")
    p.add_argument(
        "--trust-model-code",
        action="store_true",
        default=d.trust_model_code,
        help="load Keras models whose layers carry code (Lambda, custom modules); off: refused",
    )


def _export_options(args: argparse.Namespace, **extra: Any) -> Any:
    from firmware_export.options import ExportOptions

    return ExportOptions(
        tflm_tolerance_lsb=args.tflm_tolerance,
        float_tolerance=args.float_tolerance,
        min_cosine=args.min_cosine,
        min_centred_cosine=args.min_centred_cosine,
        arena_margin_fraction=args.arena_margin,
        memory_plan=args.memory_plan,
        rewrite_3d=args.rewrite_3d,
        space_to_depth=args.space_to_depth,
        name=args.name,
        trust_model_code=args.trust_model_code,
        **extra,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
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
    for add in (_add_export, _add_report, _add_listings, _add_train, _add_eval, _add_prune):
        add(sub)
    _add_fit(sub)
    _add_runtime_commands(sub, FMT)
    _add_demo(sub)
    return parser


def _add_export(sub: Any) -> None:
    d = _export_defaults()
    p = sub.add_parser(
        "export",
        formatter_class=FMT,
        help="PyTorch/ONNX model -> verified int8 TFLite, C arrays and a budget report",
    )
    p.add_argument(
        "model",
        help="run folder, zoo:NAME, file.py:factory, package.module:factory, .pt2, .onnx, "
        "or a Keras .keras/.h5 file or SavedModel folder (calibration NHWC)",
    )
    calib = p.add_mutually_exclusive_group(required=True)
    calib.add_argument("--calib", help=".npy float32 samples, (N,C,H,W) or (N,C,T,H,W)")
    calib.add_argument(
        "--calib-from",
        metavar="RUN_or_DATA",
        help="draw the calibration samples from a run folder's data set (with the run's "
        "preprocessing contract) or a data spec (synthetic-rppg, pure:/path, ...)",
    )
    p.add_argument(
        "--data-kw",
        action="append",
        metavar="KEY=VALUE",
        help="data set option for --calib-from, repeatable",
    )
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--calib-cap", type=int, default=d.calib_cap, help="most calibration samples")
    p.add_argument(
        "--verify-samples",
        type=int,
        default=d.verify_samples,
        help="samples run through every runtime",
    )
    p.add_argument("--json", action="store_true", help="print report.json on stdout")
    p.add_argument(
        "--output",
        type=int,
        default=d.output,
        metavar="N",
        help="export only output N of a model whose forward returns several (default: all)",
    )
    _add_export_options(p)
    p.set_defaults(func=cmd_export)


def _add_report(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        formatter_class=FMT,
        help="re-check a run folder or any .tflite against a device profile",
    )
    p.add_argument("path", help="run folder (with model_int8.tflite) or a .tflite file")
    p.add_argument(
        "--out", default=None, help="where to write report.* (default: beside the model)"
    )
    p.add_argument("--json", action="store_true", help="print report.json on stdout")
    _add_export_options(p)
    p.set_defaults(func=cmd_report)


def _add_listings(sub: Any) -> None:
    p = sub.add_parser("targets", help="list the built-in device profiles")
    p.set_defaults(func=cmd_targets)
    p = sub.add_parser("models", help="list the model zoo (use as zoo:NAME)")
    p.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern, e.g. 'resnet*'")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("criteria", help="list the pruning criteria")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="also list each criterion's options"
    )
    p.set_defaults(func=cmd_criteria)


def _add_common_job_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("model", help="zoo:NAME, file.py:factory or package.module:factory")
    p.add_argument(
        "--data",
        default=None,
        help="digits, synthetic-rppg, pure:/path, ubfc:/path or cifar10:/path (required, or "
        "from --config)",
    )
    p.add_argument(
        "--out",
        required=True,
        help=f"run folder ({what}, checkpoint.pt, calib.npy, summary.json, config.toml)",
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="TOML file with the option defaults (e.g. a run's config.toml); flags override",
    )
    _add_kwargs_options(p)


def _add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train", formatter_class=FMT, help="train a model on a data set and save a run"
    )
    _add_common_job_options(p, "model.pt2")
    p.add_argument("--epochs", type=int, default=TRAIN.epochs)
    p.add_argument("--lr", type=float, default=TRAIN.lr)
    p.add_argument("--batch-size", type=int, default=TRAIN.batch_size)
    p.add_argument("--seed", type=int, default=TRAIN.seed)
    p.add_argument(
        "--calib-samples",
        type=int,
        default=TRAIN.calib_samples,
        help="training samples saved as calib.npy",
    )
    p.set_defaults(func=cmd_train, config_section="train")


def _add_eval(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        formatter_class=FMT,
        help="print the task metric (accuracy or HR MAE) of a run or model on a data set",
    )
    p.add_argument(
        "model", help="run folder (pruned.pt2 or model.pt2), .pt2, zoo:NAME or file.py:factory"
    )
    p.add_argument(
        "--data",
        default=None,
        help="digits, synthetic-rppg, pure:/path, ubfc:/path, cifar10:/path "
        "(default: the run's data set and data options)",
    )
    p.add_argument(
        "--data-kw",
        action="append",
        metavar="KEY=VALUE",
        help="data set option, repeatable (e.g. --data-kw size=16); on a run folder without "
        "--data, on top of the run's own options",
    )
    p.add_argument(
        "--split", default=EVAL.split, help="test, val, train or an extra set (e.g. real_ppg)"
    )
    p.add_argument(
        "--batch-size", type=int, default=EVAL.batch_size, help="samples per forward pass"
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_eval)


def _add_prune(sub: Any) -> None:
    p = sub.add_parser(
        "prune",
        formatter_class=FMT,
        help="train with a pruning criterion, prune, fine-tune; writes RUN/pruned.pt2",
    )
    _add_common_job_options(p, "pruned.pt2")
    p.add_argument("--criterion", required=True, help="see `tinyprune criteria`")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--target-flops", type=float, help="FLOPs kept: fraction in (0, 1] or absolute FLOPs"
    )
    budget.add_argument(
        "--target-params", type=float, help="params kept: fraction in (0, 1] or absolute count"
    )
    budget.add_argument(
        "--sparsity", type=float, help="unstructured criteria: fraction of weights removed"
    )
    budget.add_argument(
        "--target",
        default=PRUNE.target,
        help="device profile (name or TOML path): keep the largest network whose "
        "int8 export fits its flash and RAM (searched with a few exports)",
    )
    _add_prune_training(p)
    p.add_argument(
        "--criterion-kw",
        action="append",
        metavar="KEY=VALUE",
        help="criterion option, repeatable (e.g. --criterion-kw source=mixed); "
        "`tinyprune criteria -v` lists each criterion's options",
    )
    _add_de_options(p)
    p.set_defaults(func=cmd_prune, config_section="prune")


def _add_fit(sub: Any) -> None:
    from tinyprune.config import FitConfig

    d = FitConfig()
    p = sub.add_parser(
        "fit",
        formatter_class=FMT,
        help="the most accurate pruned network that fits a board, chosen across criteria",
    )
    _add_common_job_options(p, "candidates/, export/, fit.json/md/html")
    p.add_argument("--target", default=d.target, help="device profile name or TOML path")
    p.add_argument(
        "--criteria",
        default=",".join(d.criteria),
        help="structured criteria to compare, comma-separated",
    )
    p.add_argument(
        "--latency-ms",
        type=float,
        default=d.latency_ms,
        help="latency limit (estimate from the profile's cycles per MAC)",
    )
    p.add_argument(
        "--metric-drop",
        type=float,
        default=d.metric_drop,
        help="largest accepted metric loss against the dense network",
    )
    _add_prune_training(p)
    _add_de_options(p)
    p.set_defaults(
        func=cmd_fit,
        config_section="prune",
        criterion_kw=None,
        target_flops=None,
        target_params=None,
        sparsity=None,
    )


def _add_prune_training(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--epochs",
        type=int,
        default=PRUNE.epochs,
        help="training epochs (with the criterion's hook)",
    )
    p.add_argument("--finetune-epochs", type=int, default=FINETUNE.epochs)
    p.add_argument("--lr", type=float, default=PRUNE.lr)
    p.add_argument(
        "--finetune-lr",
        type=float,
        default=FINETUNE.lr,
        help="peak learning rate of fine-tuning after a structured prune (default: --lr; "
        "recipes often use --lr / 10)",
    )
    p.add_argument("--batch-size", type=int, default=PRUNE.batch_size)
    p.add_argument(
        "--round-to",
        type=int,
        default=PRUNE.round_to,
        help="kept channel counts are multiples of this",
    )
    p.add_argument(
        "--bn-recalib",
        type=int,
        default=PRUNE.bn_recalib,
        metavar="N",
        help="re-estimate BatchNorm statistics on N training images right after a structured "
        "prune (0: keep the dense network's)",
    )
    p.add_argument("--seed", type=int, default=PRUNE.seed)
    p.add_argument(
        "--search-steps",
        type=int,
        default=PRUNE.search_steps,
        metavar="N",
        help="with a device profile: bisection steps of the search, one trial export each",
    )


def _add_demo(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        formatter_class=FMT,
        help="the main job on an embedded default: train on handwritten digits, "
        "prune, fine-tune, export to int8 for a Cortex-M4, report",
    )
    p.add_argument("--out", default="tinyprune-demo", help="output folder")
    p.add_argument("--target", default="cortex-m4", help="device profile")
    p.add_argument("--epochs", type=int, default=20)
    p.set_defaults(func=cmd_demo)


def _add_kwargs_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model-kw",
        action="append",
        metavar="KEY=VALUE",
        help="model factory option, repeatable (e.g. --model-kw width=8)",
    )
    p.add_argument(
        "--data-kw",
        action="append",
        metavar="KEY=VALUE",
        help="data set option, repeatable (e.g. --data-kw size=16 --data-kw "
        "data_types=DiffNormalized,Standardized --data-kw detect=false)",
    )


def _add_de_options(p: argparse.ArgumentParser) -> None:
    de = p.add_argument_group("cluster_de search (docs/methods.md, cluster_de)")
    de.add_argument("--de-pop", type=int, default=DE.pop, help="DE population")
    de.add_argument("--de-gens", type=int, default=DE.gens, help="DE generations")
    de.add_argument(
        "--de-calib",
        type=int,
        default=DE.calib,
        help="training images that recalibrate BN in each fitness evaluation",
    )
    de.add_argument(
        "--de-heldout",
        type=int,
        default=DE.heldout,
        help="held-out training images that score each fitness evaluation",
    )
    de.add_argument(
        "--de-workers",
        type=int,
        default=DE.workers,
        help="processes evaluating each DE generation (one torch thread each)",
    )


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
        args.model,
        video=args.video,
        camera=args.camera,
        frames=args.frames,
        data=args.data,
        images=tuple(args.images or ()),
        method=args.method,
        threads=args.threads,
        fps=args.fps,
        max_frames=args.max_frames,
        top_k=args.top_k,
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
            _print_summary(e.result, console)
            raise
    _print_summary(result, console)
    print(json.dumps(result.report, indent=2) if args.json else result.out_dir)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``tinyprune export``."""
    from tinyprune.app.export import CalibFrom, export_model

    opts = _export_options(
        args, calib_cap=args.calib_cap, verify_samples=args.verify_samples, output=args.output
    )
    options = parse_options(args.data_kw, "--data-kw")
    if options and not args.calib_from:
        msg = "--data-kw applies to --calib-from RUN_or_DATA; a .npy has no data options"
        raise ConfigError(msg)
    calib = CalibFrom(args.calib_from, options) if args.calib_from else args.calib
    return _run_job(
        lambda on_stage: export_model(
            args.model, calib, args.target, args.out, options=opts, on_stage=on_stage
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


def cmd_models(args: argparse.Namespace) -> int:
    """``tinyprune models``."""
    from tinyprune.models import get_model_spec, list_models

    for name in list_models(args.pattern):
        s = get_model_spec(name)
        native = "tflm" if s.tflm_native else "litert"
        shape = "x".join(str(d) for d in s.input_shape)
        print(f"{name:20s} {s.task:14s} {shape:14s} {native:6s} {s.description}")
    return 0


def cmd_criteria(args: argparse.Namespace) -> int:
    """``tinyprune criteria``."""
    import dataclasses

    from tinyprune import criteria

    for name in criteria.names():
        print(f"{name:12s} {criteria.CRITERIA.help(name)}")
        cls = criteria.CRITERIA.get(name)
        if args.verbose and dataclasses.is_dataclass(cls):
            for f in dataclasses.fields(cls):
                if f.init:
                    default = "" if f.default is dataclasses.MISSING else f" = {f.default!r}"
                    print(f"{'':12s}   {f.name}{default}")
    return 0


def _specs(args: argparse.Namespace) -> tuple[Any, Any]:
    from tinyprune.config import DataSpec, ModelSpec

    if not args.data:
        msg = "no data set: give --data (e.g. --data digits) or a --config file that names one"
        raise ConfigError(msg)
    model = ModelSpec(args.model, parse_options(args.model_kw, "--model-kw"))
    return model, DataSpec(args.data, parse_options(args.data_kw, "--data-kw"))


def cmd_train(args: argparse.Namespace) -> int:
    """``tinyprune train``."""
    from tinyprune.app.train import train_run

    model, data = _specs(args)
    cfg = TrainRunConfig(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        calib_samples=args.calib_samples,
        progress=sys.stderr.isatty(),
    )
    files = train_run(model, data, cfg, args.out)
    final = json.loads(files.summary.read_text())["fit"].get("final", {})
    print(f"final: {final}", file=sys.stderr)
    print(files.out_dir)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """``tinyprune eval``: the task metric of a run or model on one split of a data set."""
    from tinyprune.app.evaluate import eval_run
    from tinyprune.config import DataSpec

    options = parse_options(args.data_kw, "--data-kw")
    data = DataSpec(args.data or "", options) if args.data or options else None
    metrics = eval_run(args.model, data, args.split, args.batch_size)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return 0


def prune_config(args: argparse.Namespace) -> PruneConfig:
    """The :class:`PruneConfig` of ``tinyprune prune``'s arguments."""
    return PruneConfig(
        target_flops=args.target_flops,
        target_params=args.target_params,
        sparsity=args.sparsity,
        target=args.target,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        round_to=args.round_to,
        bn_recalib=args.bn_recalib,
        search_steps=args.search_steps,
        progress=sys.stderr.isatty(),
        criterion_options=parse_options(args.criterion_kw, "--criterion-kw"),
        finetune=FinetuneConfig(epochs=args.finetune_epochs, lr=args.finetune_lr),
        de=DESearchConfig(
            pop=args.de_pop,
            gens=args.de_gens,
            calib=args.de_calib,
            heldout=args.de_heldout,
            workers=args.de_workers,
        ),
    )


def cmd_prune(args: argparse.Namespace) -> int:
    """``tinyprune prune``."""
    from tinyprune.app.prune import prune_run

    model, data = _specs(args)
    files = prune_run(model, data, args.criterion, prune_config(args), args.out)
    summary = json.loads(files.summary.read_text())
    for key in ("metric_before", "metric_trained", "metric_pruned", "metric_finetuned"):
        if key in summary:
            print(f"{key}: {summary[key]}", file=sys.stderr)
    if "target" in summary:
        t = summary["target"]
        print(
            f"target {t['profile']}: kept {t['fraction']:.1%} of MACs; int8 flash "
            f"{t['flash_bytes']} B, arena {t['arena_bytes']} B ({len(t['tried'])} trial exports)",
            file=sys.stderr,
        )
    print(files.out_dir)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``tinyprune demo``: digits -> micro_cnn -> prune 50 % of MACs -> int8 -> board report."""
    from tinyprune.app.demo import run_demo

    def say(line: str) -> None:
        print(line, file=sys.stderr)

    result = run_demo(args.out, args.target, args.epochs, say, progress=sys.stderr.isatty())
    print(result.out_dir)
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    """``tinyprune fit``."""
    import dataclasses

    from tinyprune.app.board import fit_board
    from tinyprune.config import FitConfig

    model, data = _specs(args)
    names = tuple(n.strip() for n in args.criteria.split(",") if n.strip())
    prune = dataclasses.replace(prune_config(args), target=None)
    cfg = FitConfig(args.target, names, args.latency_ms, args.metric_drop, prune)
    result = fit_board(model, data, cfg, args.out)
    for row in result["candidates"]:
        verdict = "chosen" if row["criterion"] == result["winner"] else row.get("lost", "")
        print(f"{row['criterion']:12s} {verdict}", file=sys.stderr)
    if result["winner"] is None:
        msg = f"no candidate fits {args.target}; see {args.out}/fit.md"
        raise BudgetExceededError(msg)
    print(args.out)
    return 0


#: ``--config`` TOML keys (per section) -> argparse destinations, where the names differ.
_CONFIG_KEYS = {
    "finetune.epochs": "finetune_epochs",
    "finetune.lr": "finetune_lr",
    "de.pop": "de_pop",
    "de.gens": "de_gens",
    "de.calib": "de_calib",
    "de.heldout": "de_heldout",
    "de.workers": "de_workers",
}


def config_defaults(path: str, section: str) -> dict[str, Any]:
    """Argparse defaults from a ``--config`` TOML file (a run's ``config.toml``, or by hand).

    Raises:
        ConfigError: Unreadable file (unknown keys are refused by the caller).
    """
    values = load_toml(path)
    out: dict[str, Any] = {}
    for key, value in _flatten(values.get(section, {})).items():
        if key == "criterion_options":
            out["criterion_kw"] = [f"{k}={v!r}" for k, v in value.items()]
        elif key != "progress":
            out[_CONFIG_KEYS.get(key, key)] = value
    if "name" in values.get("data", {}):
        out["data"] = values["data"]["name"]
    for part, dest in (("data", "data_kw"), ("model", "model_kw")):
        options = values.get(part, {}).get("options", {})
        if options:
            out[dest] = [f"{k}={v!r}" for k, v in options.items()]
    return out


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict) and key != "criterion_options":
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value
    return out


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; with ``--config FILE`` parse again with the file's values as defaults."""
    args = parser.parse_args(argv)
    path = getattr(args, "config", None)
    if not path:
        return args
    defaults = config_defaults(path, args.config_section)
    sub = _subparser(parser, args.command)
    known = {a.dest for a in sub._actions}
    unknown = sorted(set(defaults) - known)
    if unknown:
        msg = f"config file {path!r} has no option {', '.join(unknown)} for `{args.command}`"
        raise ConfigError(msg)
    sub.set_defaults(**defaults)
    return parser.parse_args(argv)


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]  # type: ignore[no-any-return]
    msg = f"no subcommand {command!r}"
    raise ConfigError(msg)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except TinypruneError as e:
        print(f"tinyprune: error: {e}", file=sys.stderr)
        return e.exit_code
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code = int(args.func(args))
        _leave_process_group()
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
    return code


def _leave_process_group() -> None:
    """Under torchrun, every replica leaves together (a barrier, then the group is destroyed).

    Without it a replica that finished first closes its gloo sockets while its peer is still in
    the last collective, and the peer aborts ("terminate called without an active exception").
    torch is looked up, not imported: the Raspberry Pi commands run without it.
    """
    if "torch.distributed" in sys.modules:
        from tinyprune.training import distributed

        distributed.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
