"""``tinyprune export`` / ``tinyprune report``: resolve MODEL, then run ``firmware_export``.

MODEL may be a run folder (its ``pruned.pt2`` / ``model.pt2``); the model's preprocessing
contract (recorded by the run, or declared by a zoo net) goes into ``report.json`` and the
header. ``--calib-from RUN_or_DATA`` draws the calibration samples from a run's data set or a
data spec, built with that contract, instead of a ``.npy``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyprune.app.contract import (
    as_record,
    built_contract,
    check_same,
    declared,
    recorded,
    resolve_data,
    run_data,
)
from tinyprune.config import DataSpec
from tinyprune.errors import ConfigError

PROGRAMS = ("pruned.pt2", "model.pt2")


@dataclass(frozen=True)
class CalibFrom:
    """``--calib-from``: a run folder or a data spec, with ``--data-kw`` options on top.

    Attributes:
        source: A run folder (its data set and options) or a data spec (``synthetic-rppg``,
            ``pure:/path``, ...).
        options: Data options on top of the run's (or of the contract's).
        seed: Seeds which training samples are drawn.
    """

    source: str
    options: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0


def export_model(
    source: str,
    calibration: Any,
    target: str | Path,
    out_dir: str | Path,
    options: Any = None,
    on_stage: Any = None,
) -> Any:
    """Export MODEL (run folder, ``zoo:NAME``, ``file.py:factory``, ``.pt2``, ``.onnx``, Keras).

    The MODEL string is resolved here (``tinyprune.app.sources``); ``firmware_export.export``
    only ever sees a module, an ONNX file or a Keras model. ``calibration`` is a ``.npy`` path,
    an array or a :class:`CalibFrom`. Returns its ``ExportResult``.

    Raises:
        ConfigError: no program in a run folder, ``--calib-from`` for an ONNX/Keras model, or
            a calibration run whose contract differs from the model's.
    """
    from firmware_export.keras_source import is_keras_source
    from firmware_export.options import ExportOptions
    from firmware_export.pipeline import export

    source, run = _program_of(source)
    model: Any = source
    contract = None
    if not (source.endswith(".onnx") or is_keras_source(source)):
        from tinyprune.app.sources import load_model

        model = load_model(source)
        contract = recorded(run) if run is not None else declared(model.module)
    opts = options or ExportOptions()
    if isinstance(calibration, CalibFrom):
        if getattr(model, "module", None) is None:
            msg = "--calib-from needs a PyTorch MODEL (run, .pt2, zoo:NAME); give --calib NPY"
            raise ConfigError(msg)
        calibration, contract = calibration_from(calibration, model, contract, opts.calib_cap)
    if contract is not None:
        opts = dataclasses.replace(opts, preprocessing=as_record(contract))
    return export(
        model, calibration, target=target, out_dir=out_dir, options=opts, on_stage=on_stage
    )


def _program_of(source: str) -> tuple[str, Path | None]:
    """A run folder -> its program and the folder; a ``.pt2`` in a run -> it and the folder."""
    path = Path(source)
    if path.is_dir() and (path / "summary.json").is_file():
        program = next((path / n for n in PROGRAMS if (path / n).is_file()), None)
        if program is None:
            msg = f"run folder {source!r} holds neither pruned.pt2 nor model.pt2"
            raise ConfigError(msg)
        return str(program), path
    if source.endswith(".pt2") and (path.parent / "summary.json").is_file():
        return source, path.parent
    return source, None


def calibration_from(cf: CalibFrom, model: Any, contract: Any, cap: int) -> tuple[Any, Any]:
    """Calibration samples (the model's layout) and the contract they were built with.

    Raises:
        ConfigError: the run records another contract than the model, or data that do not
            fit the model.
    """
    from tinyprune.app.runs import check_compatible, to_model_layout
    from tinyprune.data import build_dataset

    run = Path(cf.source)
    if run.is_dir():
        own = run_data(run)
        if own is None:
            msg = f"--calib-from {cf.source!r}: no config.toml/summary.json naming its data set"
            raise ConfigError(msg)
        data = DataSpec(own.name, {**own.options, **cf.options})
        check_same(contract, recorded(run), f"model {model.source}", f"run {cf.source}")
        contract = contract or recorded(run)
    else:
        data = DataSpec(cf.source, dict(cf.options))
    bundle = build_dataset(data.name, **resolve_data(data, contract, model.source).options)
    check_compatible(model.module, bundle, model.source, data.name)
    built = built_contract(bundle, model.module)
    if contract is not None and built is not None:
        check_same(
            dataclasses.replace(contract, fs=built.fs), built, model.source, f"data {data.name}"
        )
    samples = bundle.calibration_batches(min(cap, len(bundle.train)), seed=cf.seed)
    return to_model_layout(samples, model.module), contract or built
