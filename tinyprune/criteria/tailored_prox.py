"""The proximal machinery of ``tailored`` (docs/methods.md §5.3): the lambda controller, the
proximal L1 step on the gates and its step size in the optimizer's metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class LambdaController:
    """``lambda <- clip(lambda exp(kappa e_t + kappa_d (e_t - e_{t-1})))``, ``e = log(rho/rho*)``.

    With ``kappa_d = 0`` this is the bare law of docs/methods.md §5.3. Because the leakage
    integrates
    lambda, that law alone oscillates around the target (factor ~3-5 in simulation); the
    damping term [R] keeps it within a factor 2.
    """

    lambda_init: float = 1e-4
    kappa: float = 0.5
    kappa_d: float = 2.0
    rho_min: float = 1e-3
    bounds: tuple[float, float] = (1e-6, 1e-1)
    rho_start: float | None = None
    log_space: bool = True  # [R] cosine on log(rho*): a linear-space cosine is too steep at its end
    value: float = field(init=False)
    _error: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.value = self.lambda_init

    def target(self, progress: float) -> float:
        """Target leakage at ``progress`` in [0, 1] (cosine from ``rho_start`` to ``rho_min``)."""
        start = self.rho_start if self.rho_start is not None else 1.0
        w = 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
        if self.log_space:
            return math.exp(math.log(self.rho_min) + (math.log(start) - math.log(self.rho_min)) * w)
        return self.rho_min + (start - self.rho_min) * w

    def update(self, rho: float, progress: float) -> float:
        """New lambda given the measured leakage ``rho``; the first call fixes ``rho_start``."""
        if self.rho_start is None:
            self.rho_start = max(rho, self.rho_min)
        error = math.log(max(rho, 1e-12)) - math.log(self.target(progress))
        step = self.kappa * error + self.kappa_d * (error - self._error)
        self._error = error
        self.value = float(np.clip(self.value * math.exp(step), *self.bounds))
        return self.value


def _prox_step_size(
    optimizer: torch.optim.Optimizer, param: torch.Tensor, precondition: bool, fallback_lr: float
) -> torch.Tensor | float:
    """The step size the proximal threshold is scaled by: the learning rate of ``param``'s group,
    divided (``precondition``) by Adam's denominator ``sqrt(v_hat) + eps`` when it has one.
    """
    lr = float(_group_of(optimizer, param).get("lr", fallback_lr))
    return lr / _adam_denominator(optimizer, param) if precondition else lr


def _group_of(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> dict[str, Any]:
    """The param group holding ``param`` (empty when the optimizer does not hold it)."""
    return next((g for g in optimizer.param_groups if any(p is param for p in g["params"])), {})


def _adam_denominator(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> torch.Tensor:
    """``sqrt(v / (1 - beta2^t)) + eps`` of Adam/AdamW for ``param`` (``v``: the running max
    under amsgrad); 1 for other optimizers and before the first step.
    """
    state = optimizer.state.get(param, {})
    if "exp_avg_sq" not in state:
        return torch.ones_like(param)
    group = _group_of(optimizer, param)
    _, beta2 = group["betas"]
    t = float(state["step"])
    v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
    denominator: torch.Tensor = (v / (1 - beta2**t)).sqrt() + group["eps"]
    return denominator


def proximal_l1_(gamma: torch.Tensor, threshold: torch.Tensor) -> None:
    """``gamma <- sign(gamma) * max(|gamma| - threshold, 0)`` in place (exact zeros)."""
    with torch.no_grad():
        gamma.copy_(gamma.sign() * (gamma.abs() - threshold).clamp(min=0))
