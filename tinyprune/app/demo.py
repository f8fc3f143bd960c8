"""``tinyprune demo``: the main job on an embedded default, with nothing to download.

Train ``micro_cnn`` on scikit-learn's handwritten digits, prune 50 % of its MACs with ``l1``,
fine-tune, export to int8 for a board and report whether it fits.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinyprune.config import PruneConfig

#: The demo's job: everything but the epochs, which the CLI sets.
DEMO_MODEL, DEMO_DATA, DEMO_CRITERION, DEMO_LR = "zoo:micro_cnn", "digits", "l1", 3e-3


def run_demo(
    out: str | Path,
    target: str,
    epochs: int,
    say: Callable[[str], None] = lambda _: None,
    progress: bool = False,
) -> Any:
    """Run the demo into ``out`` (``out/pruned``, ``out/export``); return the ExportResult.

    ``say`` receives one line per step (the CLI prints them on stderr).
    """
    from firmware_export import export
    from firmware_export.report import summary_lines
    from tinyprune.app.prune import prune_run
    from tinyprune.config import FinetuneConfig

    out = Path(out)
    say(
        "training micro_cnn on scikit-learn's handwritten digits, pruning 50 % of its MACs (l1), "
        "fine-tuning ..."
    )
    cfg = PruneConfig(
        target_flops=0.5,
        epochs=epochs,
        lr=DEMO_LR,
        finetune=FinetuneConfig(epochs=max(1, epochs // 3)),
        progress=progress,
    )
    files = prune_run(DEMO_MODEL, DEMO_DATA, DEMO_CRITERION, cfg, out / "pruned")
    say(_prune_line(json.loads(files.summary.read_text())))
    say(f"exporting to int8 for {target} ...")
    from tinyprune.app.sources import load_model

    result = export(
        load_model(str(files.program)), files.calibration, target=target, out_dir=out / "export"
    )
    for line in summary_lines(result.report):
        say(line)
    return result


def _prune_line(summary: dict[str, Any]) -> str:
    p, acc = summary["prune"], "accuracy"
    return (
        f"MACs {p['macs_before']:,} -> {p['macs_after']:,}; params {p['params_before']:,} -> "
        f"{p['params_after']:,}; accuracy trained {summary['metric_trained'][acc]:.3f}, "
        f"pruned {summary['metric_pruned'][acc]:.3f}, fine-tuned "
        f"{summary['metric_finetuned'][acc]:.3f}"
    )
