"""``tinyprune prune``: load model and data, run the job the criterion and budget call for.

It saves ``pruned.pt2`` and the other run files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyprune import criteria
from tinyprune.app.contract import as_record, built_contract, declared, resolve_data
from tinyprune.app.fit import EXPORT_FILES
from tinyprune.app.jobs import PruneJob, prune_structured_job, unstructured_job
from tinyprune.app.runs import (
    RunFiles,
    check_compatible,
    check_finite_data,
    check_out_dir,
    save_run,
    to_model_layout,
)
from tinyprune.app.sources import load_model
from tinyprune.app.summary import PruneSummary
from tinyprune.config import DataSpec, ModelSpec, PruneConfig
from tinyprune.criteria.base import Unstructured
from tinyprune.errors import ConfigError


def prune_run(
    model: ModelSpec | str, data: DataSpec | str, criterion: str, cfg: PruneConfig, out: str | Path
) -> RunFiles:
    """Run the prune job; write ``pruned.pt2``, ``checkpoint.pt``, ``calib.npy``, ``summary.json``.

    Args:
        model: The MODEL (``zoo:NAME``, ``file.py:factory``, ...) and its factory options.
        data: A :class:`~tinyprune.config.DataSpec` or a data name (``digits``, ``pure:/path``).
        criterion: A criterion name (``tinyprune criteria``); its options are in ``cfg``.
        cfg: Budget, training and search settings. With ``cfg.target`` (a device profile) the
            MACs fraction kept is searched so that the exported int8 model fits the profile
            (:func:`tinyprune.app.fit.largest_fitting_fraction`).
        out: The run folder.
    """
    from tinyprune.data import build_dataset
    from tinyprune.training import distributed

    spec = model if isinstance(model, ModelSpec) else ModelSpec(str(model))
    data = data if isinstance(data, DataSpec) else DataSpec(str(data))
    check_out_dir(Path(out))
    distributed.init_from_env()  # a no-op unless launched with torchrun
    torch.manual_seed(cfg.seed)
    loaded = load_model(spec.source, **spec.options)
    if loaded.module is None:
        msg = "pruning needs a PyTorch model; an .onnx file can only be exported"
        raise ConfigError(msg)
    net = loaded.module
    bundle = build_dataset(data.name, **resolve_data(data, declared(net), spec.source).options)
    check_compatible(net, bundle, spec.source, data.name)
    contract = as_record(built_contract(bundle, net))
    check_finite_data(bundle, data.name)
    crit = criteria.get(criterion, **dict(cfg.criterion_options))  # fails before any training
    summary: dict[str, Any] = {"model": spec.source, "data": data.name, "criterion": criterion}
    calib = to_model_layout(
        bundle.calibration_batches(min(128, len(bundle.train)), seed=cfg.seed), net
    )
    summary |= _dispatch(net, bundle, criterion, crit, cfg, calib)
    exported = summary.pop(EXPORT_FILES, None)
    summary["preprocessing"] = contract
    record = PruneSummary.from_parts(summary)
    config = {"prune": cfg.to_dict(), "model": spec.to_dict(), "data": data.to_dict()}
    if contract is not None:
        config["preprocessing"] = contract
    files = save_run(
        Path(out),
        net,
        {"name": loaded.name, "source": spec.source},
        calib,
        record.to_dict(),
        program_name="pruned.pt2",
        config=config,
    )
    if exported and distributed.is_main():
        _write_export(Path(out) / "export", exported)
    distributed.barrier()
    return files


def _write_export(folder: Path, files: dict[str, bytes]) -> None:
    """``--target``: the final check's verified export of the pruned network (``RUN/export``)."""
    from tinyprune.fileio import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        with atomic_path(folder / name) as tmp:
            tmp.write_bytes(data)


def _dispatch(
    model: torch.nn.Module,
    bundle: Any,
    name: str,
    crit: Any,
    cfg: PruneConfig,
    calib: np.ndarray,
) -> dict[str, Any]:
    """The job for the criterion's kind and the budget's kind."""
    if isinstance(crit, Unstructured):
        if cfg.target is not None:
            msg = f"--target needs a structured criterion; {name!r} is unstructured"
            raise ConfigError(msg)
        job = PruneJob(model, bundle, cfg)
        return {"metric_before": job.evaluate()} | unstructured_job(job, name)
    if cfg.target is not None:
        if cfg.target_flops is not None or cfg.target_params is not None or cfg.sparsity:
            msg = "give either --target PROFILE or --target-flops/--target-params, not both"
            raise ConfigError(msg)
        from tinyprune.app.fit import fit_profile_job

        return fit_profile_job(model, bundle, name, calib, cfg)
    if cfg.sparsity is not None or (cfg.target_flops is None and cfg.target_params is None):
        msg = (
            f"structured criterion {name!r} needs --target-flops and/or "
            "--target-params (or --target PROFILE), not --sparsity"
        )
        raise ConfigError(msg)
    from tinyprune.pruning.select import Budget

    budget = Budget(cfg.target_flops, cfg.target_params)
    return prune_structured_job(model, bundle, name, budget, cfg)
