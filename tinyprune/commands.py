"""Library-backed subcommands of the CLI: models, criteria, train, demo.

Each command parses nothing itself: it calls one library function and prints the result
(the run folder on stdout, progress and summaries on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_subcommands(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """Register the library subcommands on the CLI's subparsers."""
    p = sub.add_parser("models", help="list the model zoo (use as zoo:NAME)")
    p.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern, e.g. 'resnet*'")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("criteria", help="list the pruning criteria")
    p.set_defaults(func=cmd_criteria)

    p = sub.add_parser("train", formatter_class=fmt, help="train a model on a data set and save a run")
    p.add_argument("model", help="zoo:NAME, file.py:factory or package.module:factory")
    p.add_argument("--data", required=True,
                   help="digits, synthetic-rppg, pure:/path, ubfc:/path or cifar10:/path")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run folder (model.pt2, checkpoint.pt, calib.npy, summary.json)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("prune", formatter_class=fmt,
                       help="train with a pruning criterion, prune, fine-tune; writes RUN/pruned.pt2")
    p.add_argument("model", help="zoo:NAME, file.py:factory or package.module:factory")
    p.add_argument("--data", required=True, help="digits, synthetic-rppg, pure:/path, ubfc:/path, cifar10:/path")
    p.add_argument("--criterion", required=True, help="see `tinyprune criteria`")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--target-flops", type=float, help="FLOPs kept: fraction in (0, 1] or absolute FLOPs")
    budget.add_argument("--target-params", type=float, help="params kept: fraction in (0, 1] or absolute count")
    budget.add_argument("--sparsity", type=float, help="unstructured criteria: fraction of weights removed")
    p.add_argument("--epochs", type=int, default=1, help="training epochs (with the criterion's hook)")
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--round-to", type=int, default=4, help="kept channel counts are multiples of this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run folder (pruned.pt2, checkpoint.pt, calib.npy, summary.json)")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("demo", formatter_class=fmt,
                       help="the main job on an embedded default: train on handwritten digits, "
                            "export to int8 for a Cortex-M4, report")
    p.add_argument("--out", default="tinyprune-demo", help="output folder")
    p.add_argument("--target", default="cortex-m4", help="device profile")
    p.add_argument("--epochs", type=int, default=30)
    p.set_defaults(func=cmd_demo)


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
    from tinyprune import criteria

    for name in criteria.names():
        print(f"{name:12s} {criteria.CRITERIA.help(name)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``tinyprune train``."""
    from tinyprune.workflows import train_run

    files = train_run(args.model, args.data, args.out, epochs=args.epochs, lr=args.lr,
                      batch_size=args.batch_size, seed=args.seed, progress=sys.stderr.isatty())
    final = json.loads(files.summary.read_text())["fit"].get("final", {})
    print(f"final: {final}", file=sys.stderr)
    print(files.out_dir)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """``tinyprune prune``."""
    from tinyprune.prune_job import prune_run

    files = prune_run(args.model, args.data, args.criterion, args.out, target_flops=args.target_flops,
                      target_params=args.target_params, sparsity=args.sparsity, epochs=args.epochs,
                      finetune_epochs=args.finetune_epochs, lr=args.lr, batch_size=args.batch_size,
                      seed=args.seed, round_to=args.round_to, progress=sys.stderr.isatty())
    summary = json.loads(files.summary.read_text())
    for key in ("metric_before", "metric_trained", "metric_pruned", "metric_finetuned"):
        if key in summary:
            print(f"{key}: {summary[key]}", file=sys.stderr)
    print(files.out_dir)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``tinyprune demo``: digits -> micro_cnn -> int8 -> cortex-m4 report, no download."""
    from firmware_export import export
    from firmware_export.report import summary_lines
    from tinyprune.workflows import train_run

    out = Path(args.out)
    print("training micro_cnn on scikit-learn's handwritten digits ...", file=sys.stderr)
    files = train_run("zoo:micro_cnn", "digits", out / "train", epochs=args.epochs, lr=3e-3,
                      progress=sys.stderr.isatty())
    final = json.loads(files.summary.read_text())["fit"].get("final", {})
    print(f"trained: {final}", file=sys.stderr)
    print(f"exporting to int8 for {args.target} ...", file=sys.stderr)
    result = export(str(files.program), files.calibration, target=args.target, out_dir=out / "export")
    for line in summary_lines(result.report):
        print(line, file=sys.stderr)
    print(result.out_dir)
    return 0
