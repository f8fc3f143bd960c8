"""Turn a :class:`TrainConfig` into torch objects: seeded RNGs, data order, optimizer, schedule.

Kept apart from the loop so each piece can be tested alone (the schedule's shape, the
re-batched loader) and reused by scripts that drive training differently.
"""

from __future__ import annotations

import functools
import logging
import math
import random
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
)

from tinyprune.config import TrainConfig
from tinyprune.errors import ConfigError

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and CUDA) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    """Seed NumPy and ``random`` in a DataLoader worker from its (seeded) torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` over the trainable parameters of ``model``.

    Raises:
        ConfigError: the model has no trainable parameter.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        msg = f"{type(model).__name__} has no parameter with requires_grad=True; nothing to train"
        raise ConfigError(msg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _lr_factor(step: int, *, warm: int, total: int, cosine: bool) -> float:
    """Multiplier of the peak lr for the step about to be taken (0-based)."""
    if step < warm:
        return (step + 1) / (warm + 1)
    if not cosine:
        return 1.0
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> LRScheduler:
    """A per-step learning-rate schedule over ``cfg.epochs * steps_per_epoch`` steps.

    ``cosine``: linear warm-up over ``cfg.warmup`` epochs, then half a cosine down to exactly
    0 after the last step. ``constant``: the same warm-up, then ``cfg.lr``. ``onecycle``:
    ``OneCycleLR`` peaking at ``cfg.lr`` after ``warmup / epochs`` of the run (0.3 if no
    warm-up is given), cycling momentum unless plain SGD without momentum is used.

    Raises:
        ConfigError: ``steps_per_epoch`` is not positive.
    """
    if steps_per_epoch < 1:
        msg = f"steps_per_epoch must be >= 1, got {steps_per_epoch}; the loader is empty"
        raise ConfigError(msg)
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        pct = cfg.warmup / cfg.epochs if cfg.warmup > 0 else 0.3
        cycle = cfg.optimizer != "sgd" or cfg.momentum > 0
        return OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=total, pct_start=pct, cycle_momentum=cycle
        )
    warm = min(round(cfg.warmup * steps_per_epoch), total - 1)
    factor = functools.partial(_lr_factor, warm=warm, total=total, cosine=cfg.schedule == "cosine")
    return LambdaLR(optimizer, factor)


def _is_standard(loader: DataLoader) -> bool:
    """True when the loader uses a plain (random or sequential) sampler we can rebuild."""
    sampler = loader.sampler
    if type(loader.batch_sampler) is not BatchSampler:
        return False
    if isinstance(sampler, SequentialSampler):
        return True
    return (
        isinstance(sampler, RandomSampler)
        and not sampler.replacement
        and sampler.num_samples == len(sampler.data_source)
    )


def prepare_loader(
    loader: Any, cfg: TrainConfig, rank: int = 0, world_size: int = 1
) -> tuple[Any, DistributedSampler | None]:
    """Re-batch a standard ``DataLoader`` so that its order depends only on ``cfg.seed``.

    Keeps the dataset, collate function, workers, ``drop_last`` and whether it shuffles;
    uses ``cfg.batch_size`` and a generator seeded with ``cfg.seed``; with ``world_size > 1``
    splits the data with a ``DistributedSampler`` (returned, so the loop can ``set_epoch``).
    Loaders with custom samplers are used as they are in a single process.

    Returns:
        ``(loader, distributed_sampler_or_None)``.

    Raises:
        ConfigError: the loader has no length, or cannot be split across replicas.
    """
    if not hasattr(loader, "__len__"):
        msg = f"the training loader must have a length (len()), got {type(loader).__name__}"
        raise ConfigError(msg)
    if not (isinstance(loader, DataLoader) and _is_standard(loader)):
        if world_size > 1:
            msg = (
                f"cannot split a {type(loader).__name__} with a custom sampler across "
                f"{world_size} processes; pass a DataLoader(dataset, shuffle=...) instead"
            )
            raise ConfigError(msg)
        if getattr(loader, "batch_size", cfg.batch_size) != cfg.batch_size:
            logger.warning("loader keeps its custom sampler and batch size; cfg.batch_size ignored")
        return loader, None
    return _rebuild(loader, cfg, rank, world_size)


def _rebuild(
    loader: DataLoader, cfg: TrainConfig, rank: int, world_size: int
) -> tuple[DataLoader, DistributedSampler | None]:
    shuffle = isinstance(loader.sampler, RandomSampler)
    generator = torch.Generator()
    generator.manual_seed(cfg.seed)
    dist_sampler = None
    if world_size > 1:
        dist_sampler = DistributedSampler(
            loader.dataset,
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=cfg.seed,
            drop_last=loader.drop_last,
        )
        sampler: Any = dist_sampler
    elif shuffle:
        sampler = RandomSampler(loader.dataset, generator=generator)
    else:
        sampler = SequentialSampler(loader.dataset)
    workers = loader.num_workers
    extra: dict[str, Any] = {}
    if workers > 0:
        extra = {
            "prefetch_factor": loader.prefetch_factor,
            "persistent_workers": loader.persistent_workers,
            "multiprocessing_context": loader.multiprocessing_context,
        }
    new = DataLoader(
        loader.dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn or _seed_worker,
        generator=generator,
        **extra,
    )
    return new, dist_sampler
