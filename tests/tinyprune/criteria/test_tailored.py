"""Tailored channel pruning (TCP-R): faithfulness tests of docs/methods.md §5.7."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_nets import PlainCNN, make
from torch import nn

import tinyprune.criteria as C
from tinyprune.criteria.tailored import (
    LambdaController,
    TailoredHook,
    _adam_denominator,
    proximal_l1_,
)
from tinyprune.errors import ConfigError
from tinyprune.pruning import Budget, measure_complexity
from tinyprune.pruning import select as sel
from tinyprune.training.hooks import TrainContext


class ValidNet(nn.Module):
    """Unpadded convs + flatten + linear, so beta folding is exact (docs/methods.md §5.6)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1, self.r1 = nn.Conv2d(2, 8, 3), nn.BatchNorm2d(8), nn.ReLU()
        self.c2, self.b2, self.r2 = nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8), nn.ReLU()
        self.fc = nn.Linear(8 * 2 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.r2(self.b2(self.c2(self.r1(self.b1(self.c1(x))))))
        return self.fc(x.flatten(1))


def _ctx(model: nn.Module, lr: float = 0.1, total: int = 100) -> TrainContext:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return TrainContext(model=model, optimizer=opt, lr=lr, total_steps=total)


def test_proximal_step_gives_exact_zeros() -> None:
    g = torch.tensor([0.5, -0.05, 0.02, -1.0])
    proximal_l1_(g, torch.tensor([0.1, 0.1, 0.0, 0.1]))
    torch.testing.assert_close(g, torch.tensor([0.4, 0.0, 0.02, -0.9]))


@pytest.mark.parametrize(
    "budget",
    [Budget(target_flops=0.5), Budget(target_flops=0.6, target_params=0.5)],
    ids=["flops", "both"],
)
def test_select_meets_budget_maximally(budget: Budget) -> None:
    model, x = make(PlainCNN)
    hook = TailoredHook(x, budget, C.get("tailored", min_channels=1, min_fraction=0.0), round_to=1)
    hook.on_train_begin(_ctx(model))
    counts = np.array([len(k) for k in hook.keep])
    macs, params = hook.cost.cost(counts)
    assert macs <= hook.limits[0] and params <= hook.limits[1]
    for g, w in enumerate(hook.widths):  # B - cost < min dcost: no single channel can come back
        if counts[g] < w[-1]:
            trial = counts.copy()
            trial[g] += 1
            m, p = hook.cost.cost(trial)
            assert m > hook.limits[0] or p > hook.limits[1]
    entry = hook.history[0]
    assert set(entry) == {"step", "lambda", "rho", "macs", "params", "pset"} and entry["pset"] > 0


def _simulate(
    decay_per_lambda: float, updates: int = 30, kappa_d: float = 2.0
) -> tuple[list[float], list[float], list[float]]:
    ctl = LambdaController(
        lambda_init=1e-4, kappa=0.5, kappa_d=kappa_d, rho_min=1e-3, bounds=(1e-6, 1e-1)
    )
    rho, rhos, targets, lams = 1.0, [], [], []
    ctl.update(rho, 0.0)
    for i in range(1, updates + 1):
        rho *= math.exp(-decay_per_lambda * ctl.value)  # gammas shrink in proportion to lambda
        progress = i / updates
        lams.append(ctl.update(rho, progress))
        rhos.append(rho)
        targets.append(ctl.target(progress))
    return rhos, targets, lams


@pytest.mark.parametrize("decay", [1000.0, 2000.0, 5000.0])
def test_controller_tracks_target(decay: float) -> None:
    rhos, targets, _ = _simulate(decay_per_lambda=decay)
    ratios = [r / t for r, t in zip(rhos, targets, strict=True)][8:]
    assert all(0.5 <= q <= 2.0 for q in ratios), ratios


def test_controller_raises_lambda_when_decay_too_slow() -> None:
    _, _, lams = _simulate(decay_per_lambda=1.0, updates=10)
    assert lams[-1] > lams[0] > 1e-4
    with pytest.raises(ConfigError, match="importance"):
        C.get("tailored", importance="bogus")


def test_freeze_masked_equals_hard_pruned_with_beta_folding() -> None:
    torch.manual_seed(0)
    model = ValidNet()
    x = torch.randn(16, 2, 6, 6)
    y = torch.randn(16, 3)
    crit = C.get(
        "tailored", lambda_init=0.5, lambda_bounds=(1e-2, 10.0), select_every=5, min_channels=2
    )
    hook = TailoredHook(x[:2], Budget(target_flops=0.5), crit, round_to=2, prune_steps=60)
    ctx = _ctx(model, lr=0.05, total=60)
    _train(model, hook, ctx, x, y, 60)
    pruned, kept = _gates(hook)
    assert pruned.size and pruned.max() <= 1e-3 * np.median(kept)
    model.eval()
    with torch.no_grad():
        masked = model(x)  # Pset gammas are exactly zero: the masked network
    result = hook.freeze_(model)
    with torch.no_grad():
        hard = model(x)
    torch.testing.assert_close(hard, masked, rtol=1e-5, atol=1e-5 * masked.abs().max().item())
    assert result.macs_after <= 0.5 * result.macs_before
    assert measure_complexity(model, x[:2]).macs == result.macs_after
    assert len(hook.history) >= 12 and hook.summary()["selects"] == len(hook.history)


def _train(
    model: nn.Module,
    hook: TailoredHook,
    ctx: TrainContext,
    x: torch.Tensor,
    y: torch.Tensor,
    n: int,
) -> None:
    model.train()
    hook.on_train_begin(ctx)
    for _ in range(n):
        loss = nn.functional.mse_loss(model(x), y)
        ctx.optimizer.zero_grad()
        loss.backward()
        ctx.optimizer.step()
        ctx.step += 1
        hook.after_step(ctx)


def _gates(hook: TailoredHook) -> tuple[np.ndarray, np.ndarray]:
    """Importance of the Pset and of the kept channels of the last SELECT."""
    scores = hook.importance()
    pruned = np.concatenate([s[p] for s, p in zip(scores, hook.pset, strict=True)])
    kept = np.concatenate([s[k] for s, k in zip(scores, hook.keep, strict=True)])
    return pruned, kept


def _adam_run(prox_scale: str) -> TailoredHook:
    torch.manual_seed(0)
    model = ValidNet()
    x, y = torch.randn(16, 2, 6, 6), torch.randn(16, 3)
    crit = C.get("tailored", select_every=5, min_channels=2, prox_scale=prox_scale)
    hook = TailoredHook(x[:2], Budget(target_flops=0.5), crit, round_to=2, prune_steps=80)
    lr = 3e-3
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    _train(model, hook, TrainContext(model=model, optimizer=opt, lr=lr, total_steps=80), x, y, 80)
    return hook


def test_under_adam_the_pruned_gates_reach_zero_with_the_default_settings() -> None:
    """§5.7 "at freezing": under Adam, lr * lambda * w (§5.3 as written, for SGD) cannot outweigh
    Adam's ~lr gradient step of a gate; the preconditioned step (default) can."""
    pruned, kept = _gates(_adam_run("optimizer"))
    assert pruned.max() <= 2e-3 * np.median(kept)  # rho_min 1e-3, within the controller's factor 2
    stuck = _adam_run("lr")
    pruned, kept = _gates(stuck)
    assert pruned.max() > 0.1 * np.median(kept)
    with pytest.warns(UserWarning, match="train for more steps or raise lambda_bounds"):
        stuck.freeze_(stuck.graph.model)


def test_adam_denominator_is_the_one_of_adams_step() -> None:
    """Adam's update of a parameter == lr * m_hat / denominator (so the proximal threshold is in
    the metric of the step); 1 for SGD."""
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(5))
    optimizers = (
        torch.optim.Adam([p], lr=0.01),
        torch.optim.AdamW([p], lr=0.01, weight_decay=0),
        torch.optim.Adam([p], lr=0.01, amsgrad=True),
    )
    for opt in optimizers:
        for i in range(4):
            before = p.detach().clone()
            opt.zero_grad()
            (p**3 * (3 - i)).sum().backward()  # shrinking gradients: amsgrad's max matters
            opt.step()
        st = opt.state[p]
        m_hat = st["exp_avg"] / (1 - 0.9 ** float(st["step"]))
        expected = before - 0.01 * m_hat / _adam_denominator(opt, p)
        torch.testing.assert_close(p.detach(), expected)
    sgd = torch.optim.SGD([p], lr=0.1)
    assert torch.equal(_adam_denominator(sgd, p), torch.ones(5))


def test_greedy_min_width_respected() -> None:
    model, x = make(PlainCNN)
    crit = C.get("tailored", min_channels=4, min_fraction=0.05)  # floors only when asked
    hook = TailoredHook(x, Budget(target_flops=0.2), crit, round_to=1)
    hook.on_train_begin(_ctx(model))
    for k, w in zip(hook.keep, hook.widths, strict=True):
        assert len(k) >= max(4, w[0]) == sel.min_keep_for(int(w[-1]), 4, 0.05)
