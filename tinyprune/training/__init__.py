"""Training and fine-tuning: one seeded loop with hooks, checkpoints and DDP helpers.

Criteria extend training through :class:`TrainHook` objects passed to :func:`fit`; they never
copy the loop. Everything here works in a single process and under ``torchrun``.
"""

from tinyprune.config import TrainConfig
from tinyprune.training.builders import (
    build_optimizer,
    build_scheduler,
    prepare_loader,
    seed_everything,
)
from tinyprune.training.checkpoint import load_checkpoint, save_checkpoint
from tinyprune.training.hooks import TrainContext, TrainHook
from tinyprune.training.loop import FitResult, evaluate, finetune, fit

__all__ = [
    "FitResult",
    "TrainConfig",
    "TrainContext",
    "TrainHook",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "finetune",
    "fit",
    "load_checkpoint",
    "prepare_loader",
    "save_checkpoint",
    "seed_everything",
]
