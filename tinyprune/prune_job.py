"""``tinyprune prune``: train (with the criterion's hook), prune, fine-tune, save ``pruned.pt2``.

Structured criteria score channels once training is done and remove them physically
(``prune_structured``); a criterion's training hook (e.g. the PCC loss) is used while training.
Unstructured criteria (``wgj``, ``gmp``, ``set``, ``rigl``) update their masks during training.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from tinyprune.errors import ConfigError
from tinyprune.workflows import RunFiles, check_compatible, save_run, task_loss, task_metric


def prune_run(model_spec: str, data_spec: str, criterion: str, out: str | Path, *,
              target_flops: float | None = None, target_params: float | None = None,
              sparsity: float | None = None, epochs: int = 1, finetune_epochs: int = 1,
              lr: float = 1e-3, batch_size: int = 32, seed: int = 0, round_to: int = 4,
              progress: bool = True) -> RunFiles:
    """Run the whole prune job and write ``pruned.pt2``, ``checkpoint.pt``, ``calib.npy``, ``summary.json``."""
    from tinyprune import criteria
    from tinyprune.criteria.base import Granularity
    from tinyprune.data import build_dataset
    from tinyprune.model_source import load_model

    torch.manual_seed(seed)
    loaded = load_model(model_spec)
    if loaded.module is None:
        msg = "pruning needs a PyTorch model; an .onnx file can only be exported"
        raise ConfigError(msg)
    model, bundle = loaded.module, build_dataset(data_spec)
    check_compatible(model, bundle, model_spec, data_spec)
    spec = criteria.CRITERIA.get(criterion)  # unknown name -> UnknownNameError with a close match
    unstructured = getattr(spec, "granularity", None) == Granularity.ELEMENT
    job = _Job(model, bundle, lr, batch_size, seed, progress)
    summary: dict[str, Any] = {"model": model_spec, "data": data_spec, "criterion": criterion,
                               "metric_before": job.evaluate()}
    if unstructured:
        summary |= _unstructured(job, criterion, sparsity, epochs, target_flops, target_params)
    else:
        summary |= _structured(job, criterion, target_flops, target_params, sparsity, epochs,
                               finetune_epochs, round_to)
    calib = bundle.calibration_batches(min(128, len(bundle.train)), seed=seed)
    return save_run(Path(out), model, {"name": loaded.name, "source": model_spec}, calib, summary,
                    program_name="pruned.pt2")


class _Job:
    """The model, data and training settings shared by the phases of one prune job."""

    def __init__(self, model: Any, bundle: Any, lr: float, batch_size: int, seed: int,
                 progress: bool) -> None:
        self.model, self.bundle = model, bundle
        self.lr, self.batch_size, self.seed, self.progress = lr, batch_size, seed, progress
        self.loaders = bundle.loaders(batch_size=batch_size, seed=seed)
        self.times: dict[str, float] = {}

    def fit(self, phase: str, epochs: int, hooks: list[Any]) -> dict[str, Any]:
        from tinyprune.training import TrainConfig, fit

        start = time.perf_counter()
        cfg = TrainConfig(epochs=epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed)
        result = fit(self.model, self.loaders.train, cfg, loss_fn=task_loss(self.bundle.task),
                     hooks=hooks, progress=self.progress)
        self.times[phase] = time.perf_counter() - start
        return result.to_dict()

    def evaluate(self) -> dict[str, float]:
        from tinyprune.training import evaluate

        loader = self.loaders.test or self.loaders.val
        return evaluate(self.model, loader, task_metric(self.bundle.task, self.bundle.fs))


def _structured(job: _Job, name: str, target_flops: float | None, target_params: float | None,
                sparsity: float | None, epochs: int, finetune_epochs: int,
                round_to: int) -> dict[str, Any]:
    from tinyprune import criteria
    from tinyprune.pruning.select import Budget
    from tinyprune.pruning.structured import prune_structured

    if sparsity is not None or (target_flops is None and target_params is None):
        msg = f"structured criterion {name!r} needs --target-flops and/or --target-params (not --sparsity)"
        raise ConfigError(msg)
    crit = criteria.get(name)
    out: dict[str, Any] = {"criterion_options": _options(crit)}
    if epochs > 0:
        hooks = [crit.train_hook()] if hasattr(crit, "train_hook") else []
        out["train"] = job.fit("train", epochs, hooks)
        out["metric_trained"] = job.evaluate()
    example = next(iter(job.loaders.train))[0][:2]
    start = time.perf_counter()
    result = prune_structured(job.model, example, crit, Budget(target_flops, target_params),
                              data=job.loaders.train, round_to=round_to)
    job.times["prune"] = time.perf_counter() - start
    out["prune"] = result.to_dict()
    out["metric_pruned"] = job.evaluate()
    if finetune_epochs > 0:
        out["finetune"] = job.fit("finetune", finetune_epochs, [])
        out["metric_finetuned"] = job.evaluate()
    out["seconds"] = dict(job.times)
    return out


def _unstructured(job: _Job, name: str, sparsity: float | None, epochs: int,
                  target_flops: float | None, target_params: float | None) -> dict[str, Any]:
    from tinyprune import criteria
    from tinyprune.pruning.masks import sparsity_report

    if sparsity is None or target_flops is not None or target_params is not None:
        msg = f"unstructured criterion {name!r} needs --sparsity S (0 <= S < 1), not a FLOPs/params target"
        raise ConfigError(msg)
    if epochs < 1:
        msg = f"{name!r} prunes during training: give --epochs >= 1"
        raise ConfigError(msg)
    crit = criteria.get(name, sparsity=sparsity)
    hook = crit.make_hook()
    out: dict[str, Any] = {"criterion_options": _options(crit), "train": job.fit("train", epochs, [hook])}
    out["metric_pruned"] = job.evaluate()
    shape = (1, *job.bundle.input_shape)
    out["sparsity"] = sparsity_report(job.model, shape).to_dict()
    out["seconds"] = dict(job.times)
    return out


def _options(crit: Any) -> dict[str, Any]:
    to_dict = getattr(crit, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    from dataclasses import asdict, is_dataclass

    return asdict(crit) if is_dataclass(crit) else {}
