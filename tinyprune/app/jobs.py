"""The phases of one prune job on objects: train with the criterion, prune, fine-tune.

What a criterion adds to the job is declared by the protocols of
:mod:`tinyprune.criteria.base`, never by its name: a :class:`HasTrainHook` criterion trains with
its hook before scoring; a :class:`NeedsSearch` criterion searches its own settings (``cluster_de``:
the clusters per layer) before pruning; a :class:`PrunesWhileTraining` criterion (``tailored``)
prunes during training and hard-prunes at the end; an :class:`Unstructured` criterion (``wgj``,
``gmp``, ``set``, ``rigl``) owns masks during training. Structured criteria otherwise score
channels once training is done and remove them physically (``prune_structured``).
:func:`prune_structured_job` is also what ``bench/criteria_bench.py`` runs.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch

from tinyprune import criteria
from tinyprune.app.tasks import task_loss, task_metric
from tinyprune.config import PruneConfig
from tinyprune.criteria.base import HasTrainHook, NeedsSearch, PrunesWhileTraining, SearchData
from tinyprune.errors import ConfigError


class PruneJob:
    """The model, data and training settings shared by the phases of one prune job."""

    def __init__(self, model: Any, bundle: Any, cfg: PruneConfig) -> None:
        self.model, self.bundle, self.cfg = model, bundle, cfg
        self.loaders = bundle.loaders(batch_size=cfg.batch_size, seed=cfg.seed)
        self.times: dict[str, float] = {}

    def fit(self, phase: str, epochs: int, hooks: list[Any]) -> dict[str, Any]:
        """Train for ``epochs`` with ``hooks`` (phase ``"finetune"`` at the fine-tuning rate)."""
        from tinyprune.training import TrainConfig, fit

        c = self.cfg
        start = time.perf_counter()
        lr = c.finetune_lr if phase == "finetune" else c.lr
        train_cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=c.batch_size, seed=c.seed)
        result = fit(
            self.model,
            self.loaders.train,
            train_cfg,
            loss_fn=task_loss(self.bundle.task),
            hooks=hooks,
            progress=c.progress,
        )
        self.times[phase] = time.perf_counter() - start
        return result.to_dict()

    def evaluate(self) -> dict[str, float]:
        """The task metric on the test split (else validation)."""
        from tinyprune.training import evaluate

        loader = self.loaders.test or self.loaders.val
        return evaluate(self.model, loader, task_metric(self.bundle.task, self.bundle.fs))

    def recalibrate_bn(self) -> int:
        """Re-estimate BN statistics on ``cfg.bn_recalib`` training images; how many."""
        from tinyprune.pruning.bn_recal import batchnorms, recalibrate_bn_, sample_batches

        n = min(self.cfg.bn_recalib, len(self.bundle.train))
        if n == 0 or not batchnorms(self.model):
            return 0
        start = time.perf_counter()
        x = sample_batches(self.bundle.train.x, n, self.cfg.seed, self.cfg.batch_size)
        seen = recalibrate_bn_(self.model, x)
        self.times["bn_recalib"] = time.perf_counter() - start
        return seen

    def example(self) -> torch.Tensor:
        """Two training samples, for tracing."""
        batch: torch.Tensor = next(iter(self.loaders.train))[0][:2]
        return batch

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch."""
        return len(self.loaders.train)


def prune_structured_job(
    model: torch.nn.Module,
    bundle: Any,
    criterion: str,
    budget: Any,
    cfg: PruneConfig | None = None,
) -> dict[str, Any]:
    """Train, prune (the criterion's own way) and fine-tune ``model`` in place.

    Args:
        model: The network (pruned in place).
        bundle: A :class:`~tinyprune.data.bundle.DataBundle` matching the model's input.
        criterion: A structured criterion name (its options: ``cfg.criterion_options``).
        budget: A :class:`~tinyprune.pruning.select.Budget`.
        cfg: Training budget and search settings (its own budget fields are not read).

    Returns:
        The summary: metrics after each phase, the prune result, seconds per phase and, for a
        criterion that searches, the search report.
    """
    c = cfg or PruneConfig()
    job = PruneJob(model, bundle, c)
    out: dict[str, Any] = {"metric_before": job.evaluate()}
    crit = criteria.get(criterion, **dict(c.criterion_options))
    if isinstance(crit, PrunesWhileTraining):
        out |= _prune_while_training(job, crit, budget)
    else:
        out |= _train_then_prune(job, crit, budget)
    out["bn_recalibrated_on"] = job.recalibrate_bn()
    out["metric_pruned"] = job.evaluate()
    if c.finetune.epochs > 0:
        out["finetune"] = job.fit("finetune", c.finetune.epochs, [])
        out["metric_finetuned"] = job.evaluate()
    out["seconds"] = dict(job.times)
    return out


def train_for_criterion(
    model: torch.nn.Module, bundle: Any, criterion: str, cfg: PruneConfig | None = None
) -> dict[str, Any]:
    """Pre-train ``model`` in place with the criterion's training hook, if it has one.

    This is the training phase of :func:`prune_structured_job` on its own, so a benchmark can
    train once and prune the same trained network at several budgets (not for a criterion that
    prunes while training, whose training depends on the budget).
    """
    c = cfg or PruneConfig()
    crit = criteria.get(criterion, **dict(c.criterion_options))
    if isinstance(crit, PrunesWhileTraining):
        msg = f"{criterion!r} trains and prunes together; use prune_structured_job"
        raise ConfigError(msg)
    job = PruneJob(model, bundle, c)
    out = {"train": job.fit("train", c.epochs, _train_hooks(crit, c.seed))}
    out["metric_trained"] = job.evaluate()
    out["seconds"] = dict(job.times)
    return out


def _train_hooks(crit: Any, seed: int) -> list[Any]:
    return [crit.train_hook(seed=seed)] if isinstance(crit, HasTrainHook) else []


def _train_then_prune(job: PruneJob, crit: Any, budget: Any) -> dict[str, Any]:
    from tinyprune.pruning.structured import prune_structured

    out: dict[str, Any] = {"criterion_options": criterion_options(crit)}
    if job.cfg.epochs > 0:
        out["train"] = job.fit("train", job.cfg.epochs, _train_hooks(crit, job.cfg.seed))
        out["metric_trained"] = job.evaluate()
    if isinstance(crit, NeedsSearch):
        start = time.perf_counter()
        crit, report = crit.search(job.model, budget, search_data(job), job.cfg)
        job.times["search"] = time.perf_counter() - start
        out["search"] = dataclasses.asdict(report)
        out["criterion_options"] = criterion_options(crit)
    start = time.perf_counter()
    result = prune_structured(
        job.model,
        job.example(),
        crit,
        budget,
        data=job.loaders.train,
        round_to=job.cfg.round_to,
    )
    job.times["prune"] = time.perf_counter() - start
    out["prune"] = result.to_dict()
    return out


def _prune_while_training(job: PruneJob, crit: Any, budget: Any) -> dict[str, Any]:
    """Integrated training + pruning (tailored, docs/methods.md): train with the hook, freeze."""
    if job.cfg.epochs < 1:
        msg = f"{crit.name!r} prunes while training: give --epochs >= 1"
        raise ConfigError(msg)
    total = job.steps_per_epoch() * job.cfg.epochs
    hook = crit.pruning_hook(
        job.model, job.example(), budget, round_to=job.cfg.round_to, total_steps=total
    )
    out: dict[str, Any] = {"criterion_options": criterion_options(hook.crit)}
    out["train"] = job.fit("train", job.cfg.epochs, [hook])
    out["metric_trained"] = job.evaluate()
    start = time.perf_counter()
    result = hook.freeze_(job.model)
    job.times["prune"] = time.perf_counter() - start
    out["prune"] = result.to_dict()
    out["hook"] = hook.summary()
    return out


def search_data(job: PruneJob) -> SearchData:
    """Seeded disjoint calibration and held-out batches from the training set for a search."""
    c, data = job.cfg, job.bundle.train
    order = np.random.default_rng(c.seed).permutation(len(data))
    n_held = min(c.de.heldout, len(data) // 2)
    n_cal = min(c.de.calib, len(data) - n_held)
    held_idx, cal_idx = order[:n_held], order[n_held : n_held + n_cal]
    x = torch.from_numpy(np.asarray(data.x))
    y = torch.from_numpy(np.asarray(data.y))
    calib = [x[cal_idx[i : i + 64]] for i in range(0, n_cal, 64)]
    held = [(x[held_idx[i : i + 64]], y[held_idx[i : i + 64]]) for i in range(0, n_held, 64)]
    metric: Any = "neg_ce" if job.bundle.task == "classification" else _neg_task_loss(job)
    return SearchData(job.example(), calib, held, metric)


def _neg_task_loss(job: PruneJob) -> Any:
    loss_fn = task_loss(job.bundle.task)

    def neg_task_loss(model: torch.nn.Module, batches: Any) -> float:
        with torch.no_grad():
            values = [float(loss_fn(model(xb), yb)) for xb, yb in batches]
        return -float(np.mean(values))

    return neg_task_loss


def unstructured_job(job: PruneJob, name: str) -> dict[str, Any]:
    """Train with an unstructured criterion's mask hook to ``cfg.sparsity``; the summary."""
    from tinyprune.pruning.masks import sparsity_report

    c = job.cfg
    if c.sparsity is None or c.target_flops is not None or c.target_params is not None:
        msg = (
            f"unstructured criterion {name!r} needs --sparsity S (0 <= S < 1), "
            "not a FLOPs/params target"
        )
        raise ConfigError(msg)
    if c.epochs < 1:
        msg = f"{name!r} prunes during training: give --epochs >= 1"
        raise ConfigError(msg)
    crit = criteria.get(name, **(dict(c.criterion_options) | {"sparsity": c.sparsity}))
    hook = crit.make_hook()
    out: dict[str, Any] = {
        "criterion_options": criterion_options(crit),
        "train": job.fit("train", c.epochs, [hook]),
    }
    out["metric_pruned"] = job.evaluate()
    shape = (1, *job.bundle.input_shape)
    out["sparsity"] = sparsity_report(job.model, shape).to_dict()
    out["seconds"] = dict(job.times)
    return out


def criterion_options(crit: Any) -> dict[str, Any]:
    """A criterion's hyperparameters as plain data (its ``to_dict``, else its fields)."""
    to_dict = getattr(crit, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    if dataclasses.is_dataclass(crit) and not isinstance(crit, type):
        return dataclasses.asdict(crit)
    return {}
