"""The one training configuration, shared by pre-training and fine-tuning.

A frozen dataclass validated at construction, so a bad value fails before any data is read,
with a message naming the field, the value received and what is accepted.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tinyprune.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "onecycle", "constant")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training or fine-tuning run.

    Attributes:
        epochs: passes over the training set (>= 1).
        lr: peak learning rate (> 0).
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"`` (decoupled weight decay).
        momentum: SGD momentum in [0, 1); ignored by Adam/AdamW.
        weight_decay: L2 penalty (SGD, Adam) or decoupled decay (AdamW), >= 0.
        schedule: ``"cosine"`` (linear warm-up, then cosine to 0 at the last step),
            ``"onecycle"`` (``torch.optim.lr_scheduler.OneCycleLR``; the warm-up share is
            ``warmup / epochs``, 0.3 when ``warmup`` is 0) or ``"constant"`` (after warm-up).
        warmup: warm-up length in epochs (may be fractional), 0 <= warmup < epochs.
        batch_size: samples per batch *per process*; ``fit`` re-batches standard loaders with it.
        seed: seeds Python, NumPy, torch and the data order.
        grad_clip: max global L2 norm of the gradients, or None for no clipping.
        log_every: log the running loss every this many optimizer steps (0 = per epoch only).
        deterministic: ask torch for deterministic kernels (``use_deterministic_algorithms``).
    """

    epochs: int = 1
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup: float = 0.0
    batch_size: int = 32
    seed: int = 0
    grad_clip: float | None = None
    log_every: int = 50
    deterministic: bool = False

    def __post_init__(self) -> None:
        for check in (self._check_counts, self._check_rates, self._check_choices):
            check()

    def _check_counts(self) -> None:
        for name, low in (("epochs", 1), ("batch_size", 1), ("seed", 0), ("log_every", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                msg = f"TrainConfig.{name} must be an integer >= {low}, got {value!r}"
                raise ConfigError(msg)
        if not isinstance(self.deterministic, bool):
            msg = f"TrainConfig.deterministic must be True or False, got {self.deterministic!r}"
            raise ConfigError(msg)

    def _check_rates(self) -> None:
        if not _is_number(self.lr) or self.lr <= 0:
            msg = (
                f"TrainConfig.lr must be a finite number > 0, got {self.lr!r} "
                "(try 1e-3 for Adam, 0.1 for SGD)"
            )
            raise ConfigError(msg)
        if not _is_number(self.momentum) or not 0 <= self.momentum < 1:
            msg = f"TrainConfig.momentum must be in [0, 1), got {self.momentum!r} (0.9 is usual)"
            raise ConfigError(msg)
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            msg = (
                f"TrainConfig.weight_decay must be a finite number >= 0, got {self.weight_decay!r}"
            )
            raise ConfigError(msg)
        if not _is_number(self.warmup) or not 0 <= self.warmup < self.epochs:
            msg = (
                f"TrainConfig.warmup is in epochs and must satisfy 0 <= warmup < epochs "
                f"(epochs={self.epochs}), got {self.warmup!r}"
            )
            raise ConfigError(msg)
        if self.grad_clip is not None and (not _is_number(self.grad_clip) or self.grad_clip <= 0):
            msg = (
                "TrainConfig.grad_clip must be None (no clipping) or a number > 0, "
                f"got {self.grad_clip!r}"
            )
            raise ConfigError(msg)

    def _check_choices(self) -> None:
        for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            value = getattr(self, name)
            if value not in choices:
                msg = f"TrainConfig.{name} must be one of {', '.join(choices)}; got {value!r}"
                raise ConfigError(msg)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON/YAML-serialisable dict (for the run's resolved config)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build a config from a mapping (e.g. a YAML section); unknown keys are an error.

        Raises:
            ConfigError: a key is not a field, or a value fails validation.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            msg = (
                f"unknown TrainConfig field(s) {unknown}; "
                f"expected some of: {', '.join(sorted(known))}"
            )
            raise ConfigError(msg)
        return cls(**dict(values))
