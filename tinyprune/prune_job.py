"""``tinyprune prune``: train (with the criterion's hook), prune, fine-tune, save ``pruned.pt2``.

Structured criteria score channels once training is done and remove them physically
(``prune_structured``); a criterion's training hook (e.g. the PCC loss) is used while training.
``tailored`` prunes *during* training (its :class:`TailoredHook` runs the budget-exact SELECT
and the proximal push; ``freeze_`` hard-prunes at the end) and ``cluster_de`` runs its DE
search for the clusters per layer before pruning. Unstructured criteria (``wgj``, ``gmp``,
``set``, ``rigl``) update their masks during training. :func:`prune_structured_job` is the
library form of one structured job on objects (used by ``bench/criteria_bench.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyprune import de_settings
from tinyprune.errors import ConfigError
from tinyprune.workflows import (
    RunFiles,
    check_compatible,
    save_run,
    task_loss,
    task_metric,
    to_model_layout,
)


@dataclass(frozen=True)
class PruneSettings:
    """Training budget and search settings of one prune job (the same for every criterion).

    Attributes:
        de_pop, de_gens: Population and generations of ``cluster_de``'s DE (methods.md §4.6).
        de_calib, de_heldout: Training images used by the DE fitness for BN recalibration and
            for the held-out score (taken from the training set, never from the test set).
        de_workers: Processes evaluating each DE generation (one torch thread each).
        finetune_lr: Peak learning rate of fine-tuning (None: ``lr``). Pruning recipes often
            fine-tune at a tenth of the training rate (CHIP, filter pruning of Li et al.).
        bn_recalib: Training images on which BatchNorm statistics are re-estimated right after
            the prune (0: keep the dense network's statistics). The same images on every rank.
    """

    epochs: int = 1
    finetune_epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    round_to: int = 4
    progress: bool = True
    de_pop: int = de_settings.DE_POP
    de_gens: int = de_settings.DE_GENS
    de_calib: int = de_settings.DE_CALIB_IMAGES
    de_heldout: int = de_settings.DE_HELDOUT_IMAGES
    de_workers: int = de_settings.DE_WORKERS
    bn_recalib: int = 256
    finetune_lr: float | None = None

    def __post_init__(self) -> None:
        lows = {
            "de_pop": 4,
            "de_gens": 0,
            "de_calib": 1,
            "de_heldout": 1,
            "de_workers": 1,
            "bn_recalib": 0,
        }
        for name, low in lows.items():
            if getattr(self, name) < low:
                flag = "--" + name.replace("_", "-")
                msg = f"{flag} {getattr(self, name)} is invalid; expected an integer >= {low}"
                raise ConfigError(msg)
        if self.finetune_lr is not None and not self.finetune_lr > 0:
            msg = f"--finetune-lr {self.finetune_lr} is invalid; expected a number > 0"
            raise ConfigError(msg)


def prune_run(
    model_spec: str,
    data_spec: str,
    criterion: str,
    out: str | Path,
    *,
    target_flops: float | None = None,
    target_params: float | None = None,
    sparsity: float | None = None,
    target: str | Path | None = None,
    epochs: int = 1,
    finetune_epochs: int = 1,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    round_to: int = 4,
    progress: bool = True,
    model_kwargs: dict[str, Any] | None = None,
    data_kwargs: dict[str, Any] | None = None,
    criterion_options: dict[str, Any] | None = None,
    de_pop: int = de_settings.DE_POP,
    de_gens: int = de_settings.DE_GENS,
    de_calib: int = de_settings.DE_CALIB_IMAGES,
    de_heldout: int = de_settings.DE_HELDOUT_IMAGES,
    de_workers: int = de_settings.DE_WORKERS,
    bn_recalib: int = 256,
    finetune_lr: float | None = None,
) -> RunFiles:
    """Run the prune job; write ``pruned.pt2``, ``checkpoint.pt``, ``calib.npy``, ``summary.json``.

    With ``target`` (a device profile name or TOML path) the MACs fraction kept is searched so
    that the exported int8 model fits the profile's flash and RAM (see
    :func:`tinyprune.pruning.fit_profile.largest_fitting_fraction`). ``criterion_options`` are
    the criterion's dataclass fields (``tinyprune criteria``); ``de_*`` set ``cluster_de``'s
    search and ``bn_recalib`` the BatchNorm recalibration after the prune (:class:`PruneSettings`).
    """
    from tinyprune import criteria
    from tinyprune.criteria.base import Granularity
    from tinyprune.data import build_dataset
    from tinyprune.model_source import load_model
    from tinyprune.training import distributed

    distributed.init_from_env()  # a no-op unless launched with torchrun
    torch.manual_seed(seed)
    loaded = load_model(model_spec, **(model_kwargs or {}))
    if loaded.module is None:
        msg = "pruning needs a PyTorch model; an .onnx file can only be exported"
        raise ConfigError(msg)
    model, bundle = loaded.module, build_dataset(data_spec, **(data_kwargs or {}))
    check_compatible(model, bundle, model_spec, data_spec)
    spec = criteria.CRITERIA.get(criterion)  # unknown name -> UnknownNameError with a close match
    settings = PruneSettings(
        epochs=epochs,
        finetune_epochs=finetune_epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        round_to=round_to,
        progress=progress,
        de_pop=de_pop,
        de_gens=de_gens,
        de_calib=de_calib,
        de_heldout=de_heldout,
        de_workers=de_workers,
        bn_recalib=bn_recalib,
        finetune_lr=finetune_lr,
    )
    opts = dict(criterion_options or {})
    criteria.get(criterion, **opts)  # bad options fail before any training
    summary: dict[str, Any] = {"model": model_spec, "data": data_spec, "criterion": criterion}
    calib = to_model_layout(
        bundle.calibration_batches(min(128, len(bundle.train)), seed=seed), model
    )
    if getattr(spec, "granularity", None) == Granularity.ELEMENT:
        if target is not None:
            msg = f"--target needs a structured criterion; {criterion!r} is unstructured"
            raise ConfigError(msg)
        job = _Job(model, bundle, settings)
        summary["metric_before"] = job.evaluate()
        summary |= _unstructured(
            job, criterion, sparsity, epochs, target_flops, target_params, opts
        )
    else:
        if target is not None:
            if target_flops is not None or target_params is not None or sparsity is not None:
                msg = "give either --target PROFILE or --target-flops/--target-params, not both"
                raise ConfigError(msg)
            from tinyprune.pruning.fit_profile import fit_profile_job

            summary |= fit_profile_job(model, bundle, criterion, target, calib, settings, opts)
        else:
            if sparsity is not None or (target_flops is None and target_params is None):
                msg = (
                    f"structured criterion {criterion!r} needs --target-flops and/or "
                    "--target-params (or --target PROFILE), not --sparsity"
                )
                raise ConfigError(msg)
            from tinyprune.pruning.select import Budget

            budget = Budget(target_flops, target_params)
            summary |= prune_structured_job(model, bundle, criterion, budget, settings, opts)
    return save_run(
        Path(out),
        model,
        {"name": loaded.name, "source": model_spec},
        calib,
        summary,
        program_name="pruned.pt2",
    )


class _Job:
    """The model, data and training settings shared by the phases of one prune job."""

    def __init__(self, model: Any, bundle: Any, settings: PruneSettings) -> None:
        self.model, self.bundle, self.settings = model, bundle, settings
        self.loaders = bundle.loaders(batch_size=settings.batch_size, seed=settings.seed)
        self.times: dict[str, float] = {}

    def fit(self, phase: str, epochs: int, hooks: list[Any]) -> dict[str, Any]:
        from tinyprune.training import TrainConfig, fit

        s = self.settings
        start = time.perf_counter()
        lr = s.finetune_lr if phase == "finetune" and s.finetune_lr is not None else s.lr
        cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=s.batch_size, seed=s.seed)
        result = fit(
            self.model,
            self.loaders.train,
            cfg,
            loss_fn=task_loss(self.bundle.task),
            hooks=hooks,
            progress=s.progress,
        )
        self.times[phase] = time.perf_counter() - start
        return result.to_dict()

    def evaluate(self) -> dict[str, float]:
        from tinyprune.training import evaluate

        loader = self.loaders.test or self.loaders.val
        return evaluate(self.model, loader, task_metric(self.bundle.task, self.bundle.fs))

    def recalibrate_bn(self) -> int:
        """Re-estimate BN statistics on ``settings.bn_recalib`` training images; how many."""
        from tinyprune.pruning.bn_recal import batchnorms, recalibrate_bn_, sample_batches

        n = min(self.settings.bn_recalib, len(self.bundle.train))
        if n == 0 or not batchnorms(self.model):
            return 0
        start = time.perf_counter()
        x = sample_batches(self.bundle.train.x, n, self.settings.seed, self.settings.batch_size)
        seen = recalibrate_bn_(self.model, x)
        self.times["bn_recalib"] = time.perf_counter() - start
        return seen

    def example(self) -> torch.Tensor:
        return next(iter(self.loaders.train))[0][:2]

    def steps_per_epoch(self) -> int:
        return len(self.loaders.train)


def prune_structured_job(
    model: torch.nn.Module,
    bundle: Any,
    criterion: str,
    budget: Any,
    settings: PruneSettings | None = None,
    criterion_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, prune (the criterion's own way) and fine-tune ``model`` in place.

    Args:
        model: The network (pruned in place).
        bundle: A :class:`~tinyprune.data.bundle.DataBundle` matching the model's input.
        criterion: A structured criterion name.
        budget: A :class:`~tinyprune.pruning.select.Budget`.
        settings: Training budget and search settings.
        criterion_options: Hyperparameters passed to ``criteria.get``.

    Returns:
        The summary: metrics after each phase, the prune result, seconds per phase and, for
        ``cluster_de``, the DE search report.
    """
    s = settings or PruneSettings()
    job = _Job(model, bundle, s)
    out: dict[str, Any] = {"metric_before": job.evaluate()}
    opts = dict(criterion_options or {})
    if criterion == "tailored":
        out |= _tailored(job, budget, opts)
    else:
        out |= _train_then_prune(job, criterion, budget, opts)
    out["bn_recalibrated_on"] = job.recalibrate_bn()
    out["metric_pruned"] = job.evaluate()
    if s.finetune_epochs > 0:
        out["finetune"] = job.fit("finetune", s.finetune_epochs, [])
        out["metric_finetuned"] = job.evaluate()
    out["seconds"] = dict(job.times)
    return out


def train_for_criterion(
    model: torch.nn.Module,
    bundle: Any,
    criterion: str,
    settings: PruneSettings | None = None,
    criterion_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Pre-train ``model`` in place with the criterion's training hook, if it has one.

    This is the training phase of :func:`prune_structured_job` on its own, so a benchmark can
    train once and prune the same trained network at several budgets (not for ``tailored``,
    whose training depends on the budget).
    """
    from tinyprune import criteria

    if criterion == "tailored":
        msg = "'tailored' trains and prunes together; use prune_structured_job"
        raise ConfigError(msg)
    s = settings or PruneSettings()
    crit = criteria.get(criterion, **dict(criterion_options or {}))
    job = _Job(model, bundle, s)
    hooks = [crit.train_hook(seed=s.seed)] if hasattr(crit, "train_hook") else []
    out = {"train": job.fit("train", s.epochs, hooks), "metric_trained": job.evaluate()}
    out["seconds"] = dict(job.times)
    return out


def _train_then_prune(job: _Job, name: str, budget: Any, opts: dict[str, Any]) -> dict[str, Any]:
    from tinyprune import criteria
    from tinyprune.pruning.structured import prune_structured

    crit = criteria.get(name, **opts)
    out: dict[str, Any] = {"criterion_options": _options(crit)}
    if job.settings.epochs > 0:
        hooks = [crit.train_hook(seed=job.settings.seed)] if hasattr(crit, "train_hook") else []
        out["train"] = job.fit("train", job.settings.epochs, hooks)
        out["metric_trained"] = job.evaluate()
    if name == "cluster_de":
        start = time.perf_counter()
        crit, report = _cluster_search(job, budget, crit)
        job.times["search"] = time.perf_counter() - start
        out["search"] = dict(report.__dict__)
        out["criterion_options"] = _options(crit)
    start = time.perf_counter()
    result = prune_structured(
        job.model,
        job.example(),
        crit,
        budget,
        data=job.loaders.train,
        round_to=job.settings.round_to,
    )
    job.times["prune"] = time.perf_counter() - start
    out["prune"] = result.to_dict()
    return out


def _tailored(job: _Job, budget: Any, opts: dict[str, Any]) -> dict[str, Any]:
    """Integrated training + pruning (methods.md §5.3): train with the hook, then freeze."""
    from tinyprune import criteria
    from tinyprune.criteria.tailored import TailoredHook

    s = job.settings
    if s.epochs < 1:
        msg = "'tailored' prunes while training: give --epochs >= 1"
        raise ConfigError(msg)
    total = job.steps_per_epoch() * s.epochs
    opts.setdefault("select_every", max(1, min(100, total // 20)))  # ~20 SELECTs per run
    crit = criteria.get("tailored", **opts)
    hook = TailoredHook(job.example(), budget, crit, round_to=s.round_to)
    hook.prepare(job.model)  # gates for layers without BN, before the optimizer is built
    out: dict[str, Any] = {"criterion_options": _options(crit)}
    out["train"] = job.fit("train", s.epochs, [hook])
    out["metric_trained"] = job.evaluate()
    start = time.perf_counter()
    result = hook.freeze_(job.model)
    job.times["prune"] = time.perf_counter() - start
    out["prune"] = result.to_dict()
    out["tailored"] = hook.summary()
    return out


def _cluster_search(job: _Job, budget: Any, base: Any) -> tuple[Any, Any]:
    """DE over clusters per layer with BN-recalibrated fitness on held-out training images."""
    s, data = job.settings, job.bundle.train
    order = np.random.default_rng(s.seed).permutation(len(data))
    n_held = min(s.de_heldout, len(data) // 2)
    n_cal = min(s.de_calib, len(data) - n_held)
    held_idx, cal_idx = order[:n_held], order[n_held : n_held + n_cal]
    x = torch.from_numpy(np.asarray(data.x))
    y = torch.from_numpy(np.asarray(data.y))
    calib = [x[cal_idx[i : i + 64]] for i in range(0, n_cal, 64)]
    held = [(x[held_idx[i : i + 64]], y[held_idx[i : i + 64]]) for i in range(0, n_held, 64)]
    metric: Any = "neg_ce" if job.bundle.task == "classification" else _neg_task_loss(job)
    from tinyprune.criteria.cluster_search import search_clusters_report

    return search_clusters_report(
        job.model,
        job.example(),
        budget,
        calib,
        held,
        pop=s.de_pop,
        gens=s.de_gens,
        round_to=s.round_to,
        seed=s.seed,
        base=base,
        metric=metric,
        workers=s.de_workers,
        progress=s.progress,
    )


def _neg_task_loss(job: _Job) -> Any:
    loss_fn = task_loss(job.bundle.task)

    def neg_task_loss(model: torch.nn.Module, batches: Any) -> float:
        with torch.no_grad():
            values = [float(loss_fn(model(xb), yb)) for xb, yb in batches]
        return -float(np.mean(values))

    return neg_task_loss


def _unstructured(
    job: _Job,
    name: str,
    sparsity: float | None,
    epochs: int,
    target_flops: float | None,
    target_params: float | None,
    opts: dict[str, Any],
) -> dict[str, Any]:
    from tinyprune import criteria
    from tinyprune.pruning.masks import sparsity_report

    if sparsity is None or target_flops is not None or target_params is not None:
        msg = (
            f"unstructured criterion {name!r} needs --sparsity S (0 <= S < 1), "
            "not a FLOPs/params target"
        )
        raise ConfigError(msg)
    if epochs < 1:
        msg = f"{name!r} prunes during training: give --epochs >= 1"
        raise ConfigError(msg)
    crit = criteria.get(name, **(opts | {"sparsity": sparsity}))
    hook = crit.make_hook()
    out: dict[str, Any] = {
        "criterion_options": _options(crit),
        "train": job.fit("train", epochs, [hook]),
    }
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
