"""Library-backed subcommands of the CLI: models, criteria, train, eval, demo.

Each command parses nothing itself: it calls one library function and prints the result
(the run folder on stdout, progress and summaries on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
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
    p.add_argument(
        "-v", "--verbose", action="store_true", help="also list each criterion's options"
    )
    p.set_defaults(func=cmd_criteria)

    p = sub.add_parser(
        "train", formatter_class=fmt, help="train a model on a data set and save a run"
    )
    p.add_argument("model", help="zoo:NAME, file.py:factory or package.module:factory")
    p.add_argument(
        "--data",
        required=True,
        help="digits, synthetic-rppg, pure:/path, ubfc:/path or cifar10:/path",
    )
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out",
        required=True,
        help="run folder (model.pt2, checkpoint.pt, calib.npy, summary.json)",
    )
    _add_kwargs_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        formatter_class=fmt,
        help="print the task metric (accuracy or HR MAE) of a run or model on a data set",
    )
    p.add_argument(
        "model", help="run folder (pruned.pt2 or model.pt2), .pt2, zoo:NAME or file.py:factory"
    )
    p.add_argument(
        "--data",
        default=None,
        help="digits, synthetic-rppg, pure:/path, ubfc:/path, cifar10:/path "
        "(default: the run's summary.json data)",
    )
    p.add_argument(
        "--split", default="test", help="test, val, train or an extra set (e.g. real_ppg)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="samples per forward pass")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "prune",
        formatter_class=fmt,
        help="train with a pruning criterion, prune, fine-tune; writes RUN/pruned.pt2",
    )
    p.add_argument("model", help="zoo:NAME, file.py:factory or package.module:factory")
    p.add_argument(
        "--data",
        required=True,
        help="digits, synthetic-rppg, pure:/path, ubfc:/path, cifar10:/path",
    )
    p.add_argument("--criterion", required=True, help="see `tinyprune criteria`")
    budget = p.add_mutually_exclusive_group(required=True)
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
        default=None,
        help="device profile (name or TOML path): keep the largest network whose "
        "int8 export fits its flash and RAM (searched with a few exports)",
    )
    p.add_argument(
        "--epochs", type=int, default=1, help="training epochs (with the criterion's hook)"
    )
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--finetune-lr",
        type=float,
        default=None,
        help="peak learning rate of fine-tuning after a structured prune (default: --lr; "
        "recipes often use --lr / 10)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--round-to", type=int, default=4, help="kept channel counts are multiples of this"
    )
    p.add_argument(
        "--bn-recalib",
        type=int,
        default=256,
        metavar="N",
        help="re-estimate BatchNorm statistics on N training images right after a structured "
        "prune (0: keep the dense network's)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out",
        required=True,
        help="run folder (pruned.pt2, checkpoint.pt, calib.npy, summary.json)",
    )
    _add_kwargs_options(p)
    p.add_argument(
        "--criterion-kw",
        action="append",
        metavar="KEY=VALUE",
        help="criterion option, repeatable (e.g. --criterion-kw source=mixed); "
        "`tinyprune criteria -v` lists each criterion's options",
    )
    _add_de_options(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser(
        "demo",
        formatter_class=fmt,
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
        help="data set option, repeatable (e.g. --data-kw size=16 --data-kw chunk=8)",
    )


def _add_de_options(p: argparse.ArgumentParser) -> None:
    from tinyprune import de_settings as ds

    de = p.add_argument_group("cluster_de search (methods.md 4.6)")
    de.add_argument("--de-pop", type=int, default=ds.DE_POP, help="DE population")
    de.add_argument("--de-gens", type=int, default=ds.DE_GENS, help="DE generations")
    de.add_argument(
        "--de-calib",
        type=int,
        default=ds.DE_CALIB_IMAGES,
        help="training images that recalibrate BN in each fitness evaluation",
    )
    de.add_argument(
        "--de-heldout",
        type=int,
        default=ds.DE_HELDOUT_IMAGES,
        help="held-out training images that score each fitness evaluation",
    )
    de.add_argument(
        "--de-workers",
        type=int,
        default=ds.DE_WORKERS,
        help="processes evaluating each DE generation (one torch thread each)",
    )


def _kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from tinyprune.workflows import parse_kwargs

    return {
        "model_kwargs": parse_kwargs(args.model_kw, "--model-kw"),
        "data_kwargs": parse_kwargs(args.data_kw, "--data-kw"),
    }


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
        cls = criteria.CRITERIA.get(name)
        if args.verbose and dataclasses.is_dataclass(cls):
            for f in dataclasses.fields(cls):
                if f.init:
                    default = "" if f.default is dataclasses.MISSING else f" = {f.default!r}"
                    print(f"{'':12s}   {f.name}{default}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``tinyprune train``."""
    from tinyprune.workflows import train_run

    files = train_run(
        args.model,
        args.data,
        args.out,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=sys.stderr.isatty(),
        **_kwargs(args),
    )
    final = json.loads(files.summary.read_text())["fit"].get("final", {})
    print(f"final: {final}", file=sys.stderr)
    print(files.out_dir)
    return 0


def _eval_source(path: str, data: str | None) -> tuple[str, str]:
    """MODEL string and data spec of ``tinyprune eval``: a run folder gives both."""
    from tinyprune.errors import ConfigError

    run = Path(path)
    if run.is_dir():
        program = next((run / n for n in ("pruned.pt2", "model.pt2") if (run / n).is_file()), None)
        if program is None:
            msg = f"run folder {path!r} holds neither pruned.pt2 nor model.pt2; pass a run or MODEL"
            raise ConfigError(msg)
        summary = run / "summary.json"
        if data is None and summary.is_file():
            data = json.loads(summary.read_text()).get("data")
        path = str(program)
    if data is None:
        msg = f"no --data given and {path!r} is not a run folder with summary.json; pass --data"
        raise ConfigError(msg)
    return path, data


def _eval_split(bundle: Any, split: str) -> Any:
    from tinyprune.errors import UnknownNameError
    from tinyprune.registry import unknown_name_message

    sets = {"test": bundle.test, "val": bundle.val, "train": bundle.train, **bundle.extras}
    if split not in sets:
        raise UnknownNameError(unknown_name_message("split", split, sorted(sets)))
    return sets[split]


def cmd_eval(args: argparse.Namespace) -> int:
    """``tinyprune eval``: the task metric of a run or model on one split of a data set."""
    import torch
    from torch.utils.data import DataLoader

    from tinyprune.data import build_dataset
    from tinyprune.errors import ConfigError
    from tinyprune.model_source import ExportedModule, load_model
    from tinyprune.training import evaluate
    from tinyprune.workflows import task_metric

    spec, data = _eval_source(args.model, args.data)
    loaded = load_model(spec)
    if loaded.module is None:
        msg = f"eval needs a PyTorch model, got {spec!r}; an .onnx file can only be exported"
        raise ConfigError(msg)
    bundle = build_dataset(data)
    ds = _eval_split(bundle, args.split)
    shape = tuple(loaded.input_shape or ds.x.shape[1:])

    def as_model_input(batch: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([b[0] for b in batch])
        return x.reshape(len(batch), *shape), torch.stack([b[1] for b in batch])

    _check_eval_shape(ds.x.shape[1:], shape, spec, data)
    batch = 1 if isinstance(loaded.module, ExportedModule) else args.batch_size  # .pt2: batch 1
    loader = DataLoader(ds, batch_size=batch, collate_fn=as_model_input)
    with torch.no_grad():
        metrics = evaluate(loaded.module, loader, task_metric(bundle.task, bundle.fs))
    if args.json:
        print(json.dumps(metrics))
    else:
        print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return 0


def _check_eval_shape(
    sample: tuple[int, ...], shape: tuple[int, ...], spec: str, data: str
) -> None:
    """Same shape, or a clip ``(C, T, H, W)`` for a frame-stacked ``(C, T*H, W)`` model."""
    from tinyprune.errors import ConfigError

    sample, shape = tuple(sample), tuple(shape)
    stacked = (
        len(sample) == 4
        and len(shape) == 3
        and shape[0] == sample[0]
        and shape[1] == sample[1] * sample[2]
        and shape[2] == sample[3]
    )
    if sample != shape and not stacked:
        msg = (
            f"data {data} gives samples of shape {tuple(sample)} but model {spec} expects "
            f"{tuple(shape)}; pick matching sizes (model kwargs or data options)"
        )
        raise ConfigError(msg)


def cmd_prune(args: argparse.Namespace) -> int:
    """``tinyprune prune``."""
    from tinyprune.prune_job import prune_run
    from tinyprune.workflows import parse_kwargs

    files = prune_run(
        args.model,
        args.data,
        args.criterion,
        args.out,
        target_flops=args.target_flops,
        target_params=args.target_params,
        sparsity=args.sparsity,
        target=args.target,
        epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        round_to=args.round_to,
        progress=sys.stderr.isatty(),
        criterion_options=parse_kwargs(args.criterion_kw, "--criterion-kw"),
        bn_recalib=args.bn_recalib,
        finetune_lr=args.finetune_lr,
        de_pop=args.de_pop,
        de_gens=args.de_gens,
        de_calib=args.de_calib,
        de_heldout=args.de_heldout,
        de_workers=args.de_workers,
        **_kwargs(args),
    )
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
    """``tinyprune demo``: digits -> micro_cnn -> prune 50 % of MACs -> int8 -> cortex-m4 report."""
    from firmware_export import export
    from firmware_export.report import summary_lines
    from tinyprune.prune_job import prune_run

    out = Path(args.out)
    print(
        "training micro_cnn on scikit-learn's handwritten digits, pruning 50 % of its MACs (l1), "
        "fine-tuning ...",
        file=sys.stderr,
    )
    files = prune_run(
        "zoo:micro_cnn",
        "digits",
        "l1",
        out / "pruned",
        target_flops=0.5,
        epochs=args.epochs,
        finetune_epochs=max(1, args.epochs // 3),
        lr=3e-3,
        progress=sys.stderr.isatty(),
    )
    summary = json.loads(files.summary.read_text())
    p = summary["prune"]
    print(
        f"MACs {p['macs_before']:,} -> {p['macs_after']:,}; params {p['params_before']:,} -> "
        f"{p['params_after']:,}; accuracy trained {summary['metric_trained']['accuracy']:.3f}, "
        f"pruned {summary['metric_pruned']['accuracy']:.3f}, fine-tuned "
        f"{summary['metric_finetuned']['accuracy']:.3f}",
        file=sys.stderr,
    )
    print(f"exporting to int8 for {args.target} ...", file=sys.stderr)
    result = export(
        str(files.program), files.calibration, target=args.target, out_dir=out / "export"
    )
    for line in summary_lines(result.report):
        print(line, file=sys.stderr)
    print(result.out_dir)
    return 0
