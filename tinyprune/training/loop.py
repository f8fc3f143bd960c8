"""The one seeded training loop, used for pre-training and fine-tuning alike.

Criteria add behaviour through :class:`~tinyprune.training.hooks.TrainHook` objects instead
of copying the loop. Per step the order is fixed and documented, because criteria rely on it:
forward -> task loss + sum of ``hook.extra_loss`` -> backward (DDP all-reduces gradients here)
-> ``hook.after_backward`` -> gradient clipping -> ``optimizer.step`` -> scheduler step ->
``ctx.step += 1`` -> ``hook.after_step``. At the end of each epoch: ``hook.on_epoch_end``,
then evaluation. Under ``torchrun`` (world size > 1) the model is wrapped in DDP, the data is
split with a ``DistributedSampler`` and hooks still see the bare model in ``ctx.model``.
During a step ``ctx.lr`` is the learning rate that step uses (also in ``after_step``).
``fit`` re-seeds the global RNGs (Python, NumPy, torch) from ``cfg.seed`` when it starts.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from tinyprune.config import TrainConfig
from tinyprune.errors import ConfigError
from tinyprune.training import distributed
from tinyprune.training.builders import (
    build_optimizer,
    build_scheduler,
    prepare_loader,
    seed_everything,
)
from tinyprune.training.hooks import TrainContext, TrainHook

logger = logging.getLogger(__name__)

LossFn = Callable[[Any, Any], torch.Tensor]
MetricFn = Callable[[torch.Tensor, torch.Tensor], Any]
_HOOK_METHODS = (
    "on_train_begin",
    "extra_loss",
    "after_backward",
    "after_step",
    "on_epoch_end",
    "on_train_end",
    "summary",
)


@dataclass
class FitResult:
    """What a run produced, besides the trained weights (the model is updated in place).

    Attributes:
        history: one dict per epoch: ``epoch`` (0-based), ``train_loss`` (task + extra),
            ``task_loss``, ``extra_loss`` (batch means, averaged over replicas), ``lr`` (the
            learning rate after the epoch) and ``val_*`` metrics when a val loader was given.
        final: the last epoch's entry.
        seconds: wall time of the run.
        steps: optimizer steps taken.
        hooks: each hook's ``summary()``, keyed by class name (``Name#2`` for repeats).
    """

    history: list[dict[str, float]]
    final: dict[str, float]
    seconds: float
    steps: int
    hooks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (for ``summary.json``)."""
        return asdict(self)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _unpack(batch: Any) -> tuple[Any, Any]:
    """Split a batch into (inputs, targets): ``(x, y, ...)`` or a dict with x/y keys."""
    if isinstance(batch, Sequence) and not isinstance(batch, str) and len(batch) >= 2:
        return batch[0], batch[1]
    if isinstance(batch, Mapping):
        for xk, yk in (("x", "y"), ("inputs", "targets"), ("input", "target")):
            if xk in batch and yk in batch:
                return batch[xk], batch[yk]
    msg = (
        f"a batch must be (inputs, targets, ...) or a dict with 'x'/'y' keys, got "
        f"{type(batch).__name__}; make the dataset return (input, target) pairs"
    )
    raise ConfigError(msg)


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _as_metrics(value: Any, name: str) -> dict[str, float]:
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor | int | float):
        return {name: float(value)}
    msg = (
        "a metric function must return a number, a 0-d tensor or a dict of them, "
        f"got {type(value).__name__}"
    )
    raise ConfigError(msg)


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Iterable[Any], metric_fn: MetricFn, *, name: str | None = None
) -> dict[str, float]:
    """Run ``model`` in eval mode over ``loader`` and score all outputs at once.

    Outputs and targets of every batch are concatenated before ``metric_fn`` is called, so
    metrics that do not decompose over batches (Pearson r, HR MAE over clips) are exact.

    Args:
        model: the network; its train/eval mode is restored afterwards.
        loader: yields ``(inputs, targets, ...)`` batches.
        metric_fn: ``metric_fn(outputs, targets)`` -> number, 0-d tensor or dict of them.
        name: key for a scalar result (default: ``metric_fn.__name__``).

    Returns:
        Metric name -> value.

    Raises:
        ConfigError: the loader is empty or the model does not return a tensor.
    """
    was_training = model.training
    model.eval()
    device = _device_of(model)
    outs, targets = [], []
    try:
        for batch in loader:
            inputs, target = _unpack(_to_device(batch, device))
            out = model(inputs)
            if not isinstance(out, torch.Tensor):
                msg = f"evaluate needs a model that returns a tensor, got {type(out).__name__}"
                raise ConfigError(msg)
            outs.append(out.detach())
            targets.append(target)
    finally:
        model.train(was_training)
    if not outs:
        msg = "evaluation loader yielded no batches; give it at least one sample"
        raise ConfigError(msg)
    value = metric_fn(torch.cat(outs), torch.cat(targets))
    return _as_metrics(value, name or getattr(metric_fn, "__name__", "metric"))


def _check_hooks(hooks: Iterable[TrainHook]) -> tuple[TrainHook, ...]:
    hooks = tuple(hooks)
    for hook in hooks:
        missing = [m for m in _HOOK_METHODS if not callable(getattr(hook, m, None))]
        if missing:
            msg = (
                f"hook {hook!r} lacks {', '.join(missing)}; subclass "
                "tinyprune.training.hooks.TrainHook, whose methods default to no-ops"
            )
            raise ConfigError(msg)
    return hooks


def _hook_summaries(hooks: Sequence[TrainHook]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for hook in hooks:
        key, n = type(hook).__name__, 1
        while key in out:
            n += 1
            key = f"{type(hook).__name__}#{n}"
        out[key] = dict(hook.summary())
    return out


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """Turn on torch's deterministic kernels for the run, then restore the previous state."""
    if not enabled:
        yield
        return
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev_bench


@dataclass
class _Trainer:
    """The state of one ``fit`` call; its methods are the step and the epoch."""

    net: nn.Module  # what forward goes through (DDP wrapper or the model)
    ctx: TrainContext
    scheduler: torch.optim.lr_scheduler.LRScheduler
    hooks: tuple[TrainHook, ...]
    loss_fn: LossFn
    cfg: TrainConfig
    device: torch.device
    params: list[torch.nn.Parameter]

    def step(self, batch: Any) -> tuple[float, float]:
        """One optimizer step in the documented order; returns (task loss, extra loss)."""
        ctx, opt = self.ctx, self.ctx.optimizer
        inputs, targets = _unpack(_to_device(batch, self.device))
        ctx.lr = float(opt.param_groups[0]["lr"])
        opt.zero_grad(set_to_none=True)
        outputs = self.net(inputs)
        task = self.loss_fn(outputs, targets)
        if not isinstance(task, torch.Tensor) or task.numel() != 1:
            shape = tuple(task.shape) if isinstance(task, torch.Tensor) else ""
            msg = f"loss_fn must return a scalar tensor, got {type(task).__name__} {shape}"
            raise ConfigError(msg)
        extra = torch.zeros((), device=task.device, dtype=task.dtype)
        for hook in self.hooks:
            term = hook.extra_loss(ctx, inputs, outputs)
            if term is not None:
                extra = extra + term
        (task + extra).backward()
        for hook in self.hooks:
            hook.after_backward(ctx)
        if self.cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        opt.step()
        self.scheduler.step()
        ctx.step += 1
        for hook in self.hooks:
            hook.after_step(ctx)
        return float(task.detach()), float(extra.detach())

    def epoch(self, epoch: int, loader: Iterable[Any], bar: tqdm) -> dict[str, float]:
        """Train for one epoch; returns the epoch's mean losses (averaged over replicas)."""
        self.ctx.epoch = epoch
        self.net.train()
        sums = torch.zeros(3, dtype=torch.float64)  # task, extra, batches
        for batch in loader:
            task, extra = self.step(batch)
            sums += torch.tensor([task, extra, 1.0], dtype=torch.float64)
            bar.update(1)
            bar.set_postfix(loss=f"{task + extra:.4g}", refresh=False)
            every = self.cfg.log_every
            if every and self.ctx.step % every == 0 and distributed.is_main():
                logger.info(
                    "epoch %d/%d step %d/%d loss %.5g lr %.3g",
                    epoch + 1,
                    self.cfg.epochs,
                    self.ctx.step,
                    self.ctx.total_steps,
                    task + extra,
                    self.ctx.lr,
                )
        distributed.all_reduce_mean_(sums)
        task_mean, extra_mean = (sums[:2] / sums[2].clamp(min=1)).tolist()
        if not torch.isfinite(torch.tensor([task_mean, extra_mean])).all():
            msg = (
                f"training diverged in epoch {epoch}: mean loss task={task_mean} "
                f"extra={extra_mean}; "
                f"lower lr (now {self.cfg.lr}), set grad_clip, or check the data for NaNs"
            )
            raise ConfigError(msg)
        lr = float(self.ctx.optimizer.param_groups[0]["lr"])
        return {
            "epoch": float(epoch),
            "train_loss": task_mean + extra_mean,
            "task_loss": task_mean,
            "extra_loss": extra_mean,
            "lr": lr,
        }


def _wrap_ddp(model: nn.Module, world_size: int) -> nn.Module:
    if world_size <= 1:
        return model
    device = _device_of(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def progress_bar(total: int, enabled: bool, *, desc: str | None = None, unit: str = "step") -> tqdm:
    """A tqdm bar on stderr, shown only when ``enabled``, on rank 0 and on a terminal."""
    show = enabled and distributed.is_main() and sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        disable=not show,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
        unit=unit,
    )


def fit(
    model: nn.Module,
    train_loader: Iterable[Any],
    cfg: TrainConfig,
    *,
    loss_fn: LossFn,
    hooks: Iterable[TrainHook] = (),
    val_loader: Iterable[Any] | None = None,
    evaluate_fn: MetricFn | None = None,
    progress: bool = True,
) -> FitResult:
    """Train ``model`` in place with one seeded loop; the same call fine-tunes.

    Everything random is seeded from ``cfg.seed`` (Python, NumPy, torch, the data order), so
    the same seed, model initialisation and data give bit-identical weights. Standard
    ``DataLoader`` s are re-batched with ``cfg.batch_size`` (per process) and, under torchrun,
    split with a ``DistributedSampler`` whose epoch is set every epoch.

    Args:
        model: the network, on the device to train on; updated in place.
        train_loader: a ``DataLoader`` (or any sized iterable) of ``(inputs, targets)`` batches.
        cfg: hyperparameters.
        loss_fn: ``loss_fn(outputs, targets)`` -> scalar tensor (the task loss).
        hooks: criteria's additions, called in the given order.
        val_loader: evaluated after every epoch when given (the full set on every replica).
        evaluate_fn: ``metric_fn(outputs, targets)`` for validation; default ``loss_fn``.
        progress: show a progress bar on stderr (only on a TTY, only on rank 0).

    Returns:
        The per-epoch history, final metrics, wall time and the hooks' summaries.

    Raises:
        ConfigError: bad config, empty loader, a loss that is not a scalar, or divergence.
    """
    if not isinstance(cfg, TrainConfig):
        msg = (
            f"cfg must be a TrainConfig, got {type(cfg).__name__}; build one with TrainConfig(...)"
        )
        raise ConfigError(msg)
    hooks = _check_hooks(hooks)
    info = distributed.current()
    start = time.perf_counter()
    seed_everything(cfg.seed)
    with _deterministic(cfg.deterministic):
        loader, sampler = prepare_loader(train_loader, cfg, info.rank, info.world_size)
        trainer = _make_trainer(model, loader, cfg, loss_fn, hooks, info)
        history = _run(trainer, loader, sampler, val_loader, evaluate_fn or loss_fn, progress)
    seconds = time.perf_counter() - start
    if distributed.is_main():
        logger.info("trained %d steps in %.1f s: %s", trainer.ctx.step, seconds, history[-1])
    return FitResult(history, dict(history[-1]), seconds, trainer.ctx.step, _hook_summaries(hooks))


def _make_trainer(
    model: nn.Module,
    loader: Any,
    cfg: TrainConfig,
    loss_fn: LossFn,
    hooks: tuple[TrainHook, ...],
    info: distributed.DistInfo,
) -> _Trainer:
    steps = len(loader)
    if steps == 0:
        msg = (
            f"the training loader yields no batches (batch_size={cfg.batch_size}, drop_last may "
            "drop the only partial batch); give it more samples or a smaller batch_size"
        )
        raise ConfigError(msg)
    for hook in hooks:  # parameters a hook adds (gates) reach the optimizer and DDP
        prepare = getattr(hook, "prepare_model", None)
        if callable(prepare):
            prepare(model)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps)
    ctx = TrainContext(
        model=model,
        optimizer=optimizer,
        steps_per_epoch=steps,
        total_steps=steps * cfg.epochs,
        lr=float(optimizer.param_groups[0]["lr"]),
        rank=info.rank,
        world_size=info.world_size,
    )
    params = [p for group in optimizer.param_groups for p in group["params"]]
    net = _wrap_ddp(model, info.world_size)
    return _Trainer(net, ctx, scheduler, hooks, loss_fn, cfg, _device_of(model), params)


def _run(
    trainer: _Trainer,
    loader: Any,
    sampler: Any,
    val_loader: Iterable[Any] | None,
    metric_fn: MetricFn,
    progress: bool,
) -> list[dict[str, float]]:
    cfg, ctx, hooks = trainer.cfg, trainer.ctx, trainer.hooks
    for hook in hooks:
        hook.on_train_begin(ctx)
    history: list[dict[str, float]] = []
    with progress_bar(ctx.total_steps, progress) as bar:
        for epoch in range(cfg.epochs):
            if sampler is not None:
                sampler.set_epoch(epoch)
            record = trainer.epoch(epoch, loader, bar)
            # DDP broadcasts rank 0's buffers before each forward, then every replica updates its
            # BN statistics with its own batch: average them so replicas stay identical.
            distributed.sync_buffers_(ctx.model)
            for hook in hooks:
                hook.on_epoch_end(ctx)
            if val_loader is not None:
                name = "loss" if metric_fn is trainer.loss_fn else None
                metrics = evaluate(ctx.model, val_loader, metric_fn, name=name)
                record.update({f"val_{k}": v for k, v in metrics.items()})
            history.append(record)
            if distributed.is_main():
                logger.info(
                    "epoch %d/%d %s",
                    epoch + 1,
                    cfg.epochs,
                    " ".join(f"{k}={v:.5g}" for k, v in record.items() if k != "epoch"),
                )
    for hook in hooks:
        hook.on_train_end(ctx)
    return history


finetune = fit
"""Fine-tuning is training with another config (fewer epochs, lower lr): the same loop."""
