"""``tinyprune report``: re-check an existing run, or any ``.tflite``, against a device profile.

A model from elsewhere (a TF-MOT-pruned Keras model converted to TFLite, say) gets the same
analysis as an export: op check (exit 4), lint, TFLM vs LiteRT parity on seeded int8 inputs,
measured arena, budget (exit 3) and the report files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from firmware_export.budget import load_profile
from firmware_export.pipeline import (
    ExportOptions,
    ExportResult,
    Stage,
    StageTimer,
    raise_if_over_budget,
)
from firmware_export.report_builder import Analysed, ReportInputs, analyze_and_report
from tinyprune.errors import ConfigError


def report_existing(
    path: str | Path,
    *,
    target: str | Path,
    out_dir: str | Path | None = None,
    options: ExportOptions | None = None,
    on_stage: Stage | None = None,
    raise_on_budget: bool = True,
) -> ExportResult:
    """Analyse ``path`` (a run folder holding ``model_int8.tflite``, or a ``.tflite`` file).

    Reports are written to ``out_dir`` (default: the run folder, or the ``.tflite``'s folder).

    Raises:
        ConfigError (2), UnsupportedOpError (4), VerificationError (5), BudgetExceededError (3).
    """
    src = Path(path)
    tflite = src / "model_int8.tflite" if src.is_dir() else src
    if not tflite.is_file():
        msg = f"{str(src)!r} is neither a run folder with model_int8.tflite nor a .tflite file"
        raise ConfigError(msg)
    model_bytes = tflite.read_bytes()
    profile = load_profile(target)
    out = Path(out_dir) if out_dir is not None else tflite.parent
    opts = options or ExportOptions()
    timer = StageTimer(on_stage)
    inputs = ReportInputs(
        name=opts.name or tflite.stem, source=str(tflite), model_bytes=model_bytes, profile=profile
    )
    done = analyze_and_report(inputs, opts, timer)
    report = done.report
    contract = opts.preprocessing or _recorded_preprocessing(tflite.parent)
    if contract is not None:  # the export's record of the model's input survives a re-check
        report["preprocessing"] = dict(contract)
    paths = _write(out, done)
    result = ExportResult(out, paths, report, dict(timer.times))
    if raise_on_budget:
        raise_if_over_budget(result, profile.name)
    return result


def _recorded_preprocessing(folder: Path) -> dict[str, object] | None:
    """``report.json["preprocessing"]`` already beside the model (None: absent or unreadable)."""
    try:
        doc = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    found = doc.get("preprocessing") if isinstance(doc, dict) else None
    return found if isinstance(found, dict) else None


def _write(out: Path, done: Analysed) -> dict[str, Path]:
    from firmware_export.report import write_reports

    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        written = write_reports(work, done.report, done.analysis, done.budget)
        paths = {}
        for p in written:
            os.replace(p, out / p.name)
            paths[p.suffix.lstrip(".") + "_report"] = out / p.name
        return paths
    finally:
        shutil.rmtree(work, ignore_errors=True)
