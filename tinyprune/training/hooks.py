"""The contract between the one training loop and what pruning criteria add to it.

A criterion never copies the loop: it contributes a :class:`TrainHook` (an extra loss term
such as PCC, a regulariser or proximal step such as the tailored criterion's, mask updates
such as the weight-gradient joint criterion's, or a periodic callback such as a search).
Every method has a default that does nothing, so a hook overrides only what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class TrainContext:
    """What the loop knows at a point in training; hooks read it and may keep state in ``state``."""

    model: nn.Module  # the bare model (DDP's .module when wrapped)
    optimizer: torch.optim.Optimizer
    epoch: int = 0
    step: int = 0  # global optimizer steps taken so far
    steps_per_epoch: int = 0
    total_steps: int = 0
    lr: float = 0.0
    rank: int = 0
    world_size: int = 1
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def distributed(self) -> bool:
        """True when several processes train replicas (reduce data-dependent statistics)."""
        return self.world_size > 1


class TrainHook:
    """Base class with no-op defaults; subclass and override what the criterion needs."""

    def prepare_model(self, model: nn.Module) -> None:
        """Called before the optimizer and the DDP wrapper are built: add parameters here
        (inserted gates) so that both see them.
        """

    def on_train_begin(self, ctx: TrainContext) -> None:
        """Called once before the first step (allocate statistics, register forward hooks)."""

    def extra_loss(
        self, ctx: TrainContext, inputs: torch.Tensor, outputs: torch.Tensor
    ) -> torch.Tensor | None:
        """A term added to the task loss for this batch (e.g. PCC), or None."""
        return None

    def after_backward(self, ctx: TrainContext) -> None:
        """Gradients are ready (and all-reduced under DDP); the optimizer has not stepped yet."""

    def after_step(self, ctx: TrainContext) -> None:
        """The optimizer stepped (``ctx.step`` already counts it): proximal steps, mask updates."""

    def on_epoch_end(self, ctx: TrainContext) -> None:
        """Called after each epoch (periodic searches, logging)."""

    def on_train_end(self, ctx: TrainContext) -> None:
        """Called once after the last step (remove forward hooks, freeze masks)."""

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable counters for the run summary (drops, regrowths, lambda, ...)."""
        return {}
