"""Tailored Channel Pruning with adaptive sparsity regularisation (Lee et al., IEEE Access 2025).

Only the abstract was available; this is the TCP-R reconstruction of docs/methods.md §5 [R]: BN
scales are channel gates; every ``select_every`` steps a budget-exact greedy SELECT (plus a
fill pass) splits channels into keep set ``S`` and prune set ``Pset``; a cost-aware proximal L1
step after each optimizer step pushes ``Pset``'s gammas to exact zeros with a strength
``lambda_t`` that a controller adapts so the leakage ``rho_t`` follows a cosine-decaying
target. At the end, ``Pset`` is hard-pruned after folding ``act(beta)`` into the consumers.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from tinyprune.criteria.base import CRITERIA, Granularity, ScoreInput
from tinyprune.criteria.tailored_prox import (
    LambdaController,
    _adam_denominator,
    _prox_step_size,
    proximal_l1_,
)
from tinyprune.errors import ConfigError
from tinyprune.pruning.tensors import tensor_attr, weight_of
from tinyprune.training.distributed import all_reduce_mean_, consensus_mean_
from tinyprune.training.hooks import TrainContext, TrainHook

log = logging.getLogger(__name__)

__all__ = [
    "LambdaController",
    "TailoredCriterion",
    "TailoredHook",
    "_adam_denominator",
    "fold_beta_",
    "proximal_l1_",
]


#: ``select_every`` unless asked: a SELECT every 100 steps, fewer on short runs (pruning_hook).
SELECT_EVERY_DEFAULT = 100


@CRITERIA.register("tailored", help="BN-gate importance with budget-exact greedy SELECT (TCP-R)")
@dataclass(frozen=True)
class TailoredCriterion:
    """Tailored channel pruning gates (Lee et al., IEEE Access 13:12113-12126, 2025).

    Importance of channel ``c`` = ``|gamma_c|`` of its BatchNorm (``importance='gamma'``) or the
    Taylor term ``|gamma_c * dL/dgamma_c|`` (``'taylor'``, needs gradients); coupled groups use
    the L2 norm over members. Selection is the greedy SELECT of §5.3.

    ``prox_scale`` [R]: §5.3's proximal threshold ``lr * lambda * w`` is written for SGD. Under
    Adam the gradient step of a gate is ~``lr`` whatever its gradient, so that threshold can
    never outweigh it (lambda is capped at 0.1) and ``Pset`` never reaches zero. ``"optimizer"``
    (default) divides the threshold by Adam's denominator ``sqrt(v_hat) + eps`` (the proximal
    step in Adam's metric, as ProxGen, Yun et al. NeurIPS 2021): lambda then weighs against the
    gradient as under SGD, and under SGD the two are the same. ``"lr"`` is §5.3 as written.
    ``lambda_bounds`` [R]: §5.3 caps lambda at 1e-1 (CIFAR, SGD, ~40k steps); on runs of a few
    hundred steps that cap left the controller short of its target, so the default cap is 10
    (the controller lowers lambda again once the leakage follows its target).
    """

    importance: str = "gamma"
    min_channels: int = 1  # the engine's floor; raise it (or min_fraction) to keep wider layers
    min_fraction: float = 0.0
    lambda_init: float = 1e-4
    lambda_all: float = 0.0  # lambda_0 of §5.3 on every gate (1e-5 or 0)
    kappa: float = 0.5
    kappa_d: float = 2.0  # [R] damping on the change of the log-error (0 = the bare §5.3 law)
    rho_min: float = 1e-3
    lambda_bounds: tuple[float, float] = (1e-6, 10.0)  # [R] §5.3: 1e-1 (SGD, ~40k steps)
    select_every: int = SELECT_EVERY_DEFAULT
    prox_scale: str = "optimizer"  # [R] "optimizer": Adam-preconditioned threshold; "lr": §5.3
    name: ClassVar[str] = "tailored"
    granularity: ClassVar[Granularity] = Granularity.CHANNEL
    needs_grad: ClassVar[bool] = False
    selection: ClassVar[str] = "greedy"
    group_reduce: ClassVar[str] = "l2"

    def __post_init__(self) -> None:
        if self.importance not in ("gamma", "taylor"):
            msg = f"tailored importance {self.importance!r} unknown; expected 'gamma' or 'taylor'"
            raise ConfigError(msg)
        if self.prox_scale not in ("optimizer", "lr"):
            msg = f"tailored prox_scale {self.prox_scale!r} unknown; expected 'optimizer' or 'lr'"
            raise ConfigError(msg)
        if self.select_every < 1 or self.kappa <= 0:
            msg = f"select_every={self.select_every}, kappa={self.kappa}: expected >= 1 and > 0"
            raise ConfigError(msg)

    def pruning_hook(
        self, model: nn.Module, example_input: Any, budget: Any, *, round_to: int, total_steps: int
    ) -> TailoredHook:
        """The hook that trains and prunes ``model`` to ``budget`` (§5.3) in ``total_steps``.

        ``select_every`` left at its default is scaled to the run: about 20 SELECTs per run, at
        most one every 100 steps. Gates for convs without BatchNorm are inserted into ``model``
        here, before the optimizer is built.
        """
        crit = self
        if self.select_every == SELECT_EVERY_DEFAULT:
            crit = replace(self, select_every=max(1, min(100, total_steps // 20)))
        hook = TailoredHook(example_input, budget, crit, round_to=round_to)
        hook.prepare(model)
        return hook

    def applies_to(self, inp: ScoreInput) -> bool:
        """Layers with an affine BatchNorm or an inserted gate (:mod:`tinyprune.pruning.gates`)."""
        return _gate_param(inp.bn, inp.module) is not None

    def score(self, inp: ScoreInput) -> torch.Tensor:
        """``|gamma|`` (or ``|gamma * grad|``) of the layer's BatchNorm scale or inserted gate."""
        gate = _gate_param(inp.bn, inp.module)
        if gate is None:
            msg = (
                f"tailored needs a BatchNorm or an inserted gate after layer {inp.name!r}; "
                "TailoredHook inserts the gates (prepare / on_train_begin)"
            )
            raise ConfigError(msg)
        gamma = gate.detach().double()
        if self.importance == "taylor":
            if gate.grad is None:
                msg = f"importance='taylor' needs grads of {inp.name!r}'s gate; run a backward"
                raise ConfigError(msg)
            return (gamma * gate.grad.double()).abs()
        return gamma.abs()


def _gate_param(bn: nn.Module | None, module: nn.Module | None) -> nn.Parameter | None:
    """The channel gate of a layer: its affine BatchNorm's scale, else its inserted gate."""
    from tinyprune.pruning.gates import gate_of

    scale = getattr(bn, "weight", None) if bn is not None else None
    if isinstance(scale, nn.Parameter):
        return scale
    return gate_of(module) if module is not None else None


def fold_beta_(graph: Any, keep: Sequence[Iterable[int]], activation: str = "relu") -> int:
    """Fold the constant ``act(beta_c)`` of removed zero-gamma channels into consumers' biases.

    A channel whose gamma is 0 outputs ``act(beta_c)`` everywhere, which its consumers see as a
    constant input (docs/methods.md §5.6). Exact for Linear consumers and unpadded convs; with zero
    padding the border pixels differ. Only single-producer groups are folded.

    Returns:
        The number of groups folded.
    """
    acts: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "relu": torch.relu,
        "identity": lambda t: t,
    }
    if activation not in acts:
        msg = f"activation {activation!r} is unknown; expected one of: {', '.join(acts)}"
        raise ConfigError(msg)
    folded = 0
    for group, kept in zip(graph.groups, keep, strict=True):
        removed = sorted(set(range(group.size)) - {int(i) for i in kept})
        bn = graph.bn_after(group.members[0].name) if len(group.members) == 1 else None
        if not removed or bn is None:
            if removed and len(group.members) > 1:
                log.debug("group %s has several producers; beta not folded", group.name)
            continue
        const = acts[activation](tensor_attr(bn, "bias").detach())
        for slot in group.consumers:
            _fold_into(graph.model.get_submodule(slot.name), slot, set(removed), const)
        folded += 1
    return folded


def _fold_into(consumer: nn.Module, slot: Any, removed: set[int], const: torch.Tensor) -> None:
    if isinstance(consumer, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        msg = f"beta of removed channels not folded into conv-transpose {slot.name!r}"
        warnings.warn(msg, stacklevel=3)
        return
    w = weight_of(consumer).detach()
    if consumer.bias is None:
        consumer.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype))
    bias = tensor_attr(consumer, "bias")
    with torch.no_grad():
        for unit, root in zip(slot.idxs, slot.root, strict=True):
            if root in removed:
                col = w[:, unit].reshape(w.shape[0], -1).sum(dim=1)
                bias += const[root] * col


def _add_to_optimizer(optimizer: torch.optim.Optimizer, gates: list[nn.Parameter]) -> None:
    """Train gates inserted after the optimizer was built (same settings as its first group,
    no weight decay: the proximal step is their only regulariser).
    """
    if not gates:
        return
    first = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    optimizer.add_param_group({**first, "params": gates, "weight_decay": 0.0})


class TailoredHook(TrainHook):
    """Integrated training + pruning of docs/methods.md §5.3 as a training-loop hook.

    Args:
        example_input: A batch for tracing the model's channel groups.
        budget: The :class:`~tinyprune.pruning.select.Budget` to meet exactly.
        criterion: Hyperparameters (:class:`TailoredCriterion`).
        round_to: Kept widths are multiples of this.
        prune_steps: Length of the pruning phase in optimizer steps (default: ``ctx.total_steps``).
        ignored_layers: Layers whose output channels stay.
    """

    def __init__(
        self,
        example_input: Any,
        budget: Any,
        criterion: TailoredCriterion | None = None,
        *,
        round_to: int = 4,
        prune_steps: int | None = None,
        ignored_layers: Sequence[nn.Module] = (),
    ) -> None:
        self.example_input, self.budget = example_input, budget
        self.crit = criterion if criterion is not None else TailoredCriterion()
        self.round_to, self.prune_steps, self.ignored = round_to, prune_steps, ignored_layers
        c = self.crit
        self.controller = LambdaController(
            c.lambda_init, c.kappa, c.kappa_d, c.rho_min, c.lambda_bounds
        )
        self.history: list[dict[str, float]] = []
        self.rho_at_freeze: float | None = None
        self.keep: list[np.ndarray] = []
        self.pset: list[np.ndarray] = []

    def prepare(self, model: nn.Module) -> list[nn.Parameter]:
        """Trace the channel groups and insert a gate where a member layer has no BatchNorm.

        Call it before the optimizer is built so that the gates are among the model's
        parameters; :meth:`on_train_begin` calls it otherwise and adds the gates to the
        optimizer. Returns the inserted gates.
        """
        from tinyprune.pruning.channel_graph import ChannelGraph
        from tinyprune.pruning.gates import insert_gates_

        was = model.training
        model.eval()
        try:
            self.graph = ChannelGraph(model, self.example_input, self.ignored)
            self.cost = self.graph.cost_model()
        finally:
            model.train(was)
        bare = [s.name for g in self.graph.groups for s in g.members]
        bare = [n for n in bare if self.graph.bn_after(n) is None]
        return insert_gates_(model, bare)

    def prepare_model(self, model: nn.Module) -> None:
        """The training loop's call before it builds the optimizer and DDP: insert the gates."""
        if getattr(self, "graph", None) is None or self.graph.model is not model:
            self.prepare(model)

    def on_train_begin(self, ctx: TrainContext) -> None:
        """Trace groups (:meth:`prepare`), build the cost-aware weights; run a first SELECT."""
        from tinyprune.pruning import select as sel

        late: list[nn.Parameter] = []
        if getattr(self, "graph", None) is None or self.graph.model is not ctx.model:
            late = self.prepare(ctx.model)
            _add_to_optimizer(ctx.optimizer, late)
        # Gates inserted here came after DDP wrapped the model: DDP does not all-reduce their
        # gradients, so after_backward does (replicas on different shards would drift apart).
        self._unsynced = late if ctx.distributed else []
        self.limits = self.budget.limits(*self.cost.dense)
        crit = self.crit
        groups = self.graph.groups
        mins = [sel.min_keep_for(g.size, crit.min_channels, crit.min_fraction) for g in groups]
        self.widths = [
            sel.allowed_widths(g.size, self.round_to, m)
            for g, m in zip(self.graph.groups, mins, strict=True)
        ]
        full = self.cost.group_sizes.copy()
        dcost = np.array(
            [
                sel.step_cost(self.cost, full, g, int(full[g] - 1), self.limits)
                for g in range(len(full))
            ]
        )
        self.weights = dcost / max(float(np.mean(dcost)), 1e-12)
        model = self.graph.model
        self._gates = [
            [
                (_gate_param(self.graph.bn_after(s.name), model.get_submodule(s.name)), s)
                for s in g.members
            ]
            for g in self.graph.groups
        ]
        if ctx.distributed:  # rank 0's gates everywhere (BN scales DDP has already broadcast)
            with torch.no_grad():
                for gates in self._gates:
                    for gate, _ in gates:
                        if gate is not None:
                            consensus_mean_(gate.data)
        self._select(ctx)

    def after_backward(self, ctx: TrainContext) -> None:
        """Average the gradients of gates DDP does not manage (inserted after it wrapped)."""
        for gate in getattr(self, "_unsynced", ()):
            if gate.grad is not None:
                all_reduce_mean_(gate.grad)

    def importance(self) -> list[np.ndarray]:
        """Gate importance per group (L2 over member |gamma|), averaged over DDP replicas (one
        SELECT, one leakage and one lambda on every replica, bit for bit).
        """
        from tinyprune.pruning.scoring import reduce_scores_across_ranks, score_groups

        scores = score_groups(self.graph, self.crit, reduce=self.crit.group_reduce)
        return reduce_scores_across_ranks(scores)

    def _select(self, ctx: TrainContext) -> None:
        from tinyprune.pruning import select as sel

        scores = self.importance()
        chosen = sel.select_greedy(scores, self.cost, self.limits, self.widths)
        # The greedy is maximal but may stop a few percent short of the MACs target when the
        # steps that could grow are large; the knapsack fill tops it up to within 2 % (most
        # gate importance first). Done at every SELECT, not at freezing, so that the Pset the
        # proximal steps drive to zero is the one the hard prune removes.
        counts = np.array(chosen.counts, dtype=np.int64)
        filled = sel.knapsack_fill(scores, counts, self.widths, self.cost, self.limits)
        if not np.array_equal(filled, counts):
            chosen = sel.make_selection(scores, filled, self.cost)
        self.keep = list(chosen.keep)
        pairs = zip(self.graph.groups, self.keep, strict=True)
        self.pset = [np.setdiff1d(np.arange(g.size), k) for g, k in pairs]
        rho = self.leakage(scores)
        lam = self.controller.value
        if self.history:
            lam = self.controller.update(rho, self._progress(ctx))
        else:
            self.controller.rho_start = max(rho, self.crit.rho_min)
        entry = {
            "step": float(ctx.step),
            "lambda": lam,
            "rho": rho,
            "macs": chosen.macs,
            "params": chosen.params,
            "pset": float(sum(len(p) for p in self.pset)),
        }
        self.history.append(entry)
        log.info("tailored SELECT %s", entry)

    def leakage(self, scores: list[np.ndarray] | None = None) -> float:
        """``rho = max_{Pset} importance / median_{S} importance``."""
        scores = scores if scores is not None else self.importance()
        pruned = [s[p] for s, p in zip(scores, self.pset, strict=True) if len(p)]
        kept = np.concatenate([s[k] for s, k in zip(scores, self.keep, strict=True)])
        if not pruned:
            return 0.0
        return float(np.max(np.concatenate(pruned)) / max(float(np.median(kept)), 1e-12))

    def _progress(self, ctx: TrainContext) -> float:
        total = self.prune_steps or ctx.total_steps or 1
        return ctx.step / total

    def after_step(self, ctx: TrainContext) -> None:
        """Proximal L1 on the gates; SELECT and controller update every ``select_every`` steps."""
        if self.prune_steps is not None and ctx.step > self.prune_steps:
            return
        if ctx.step % self.crit.select_every == 0:
            self._select(ctx)
        lam, lam_all = self.controller.value, self.crit.lambda_all
        for gates, pset, w in zip(self._gates, self.pset, self.weights, strict=True):
            for gate, slot in gates:
                if gate is None:
                    continue
                in_p = torch.zeros(gate.shape[0], dtype=gate.dtype)
                root = torch.tensor(slot.root)
                hit = torch.isin(root, torch.as_tensor(pset)).to(in_p.dtype)
                in_p[torch.tensor(slot.idxs)] = hit
                precondition = self.crit.prox_scale == "optimizer"
                size = _prox_step_size(ctx.optimizer, gate, precondition, ctx.lr)
                proximal_l1_(gate, size * w * (lam * in_p + lam_all))

    def freeze_(self, model: nn.Module, activation: str = "relu") -> Any:
        """Hard-prune ``Pset`` of the last SELECT (after beta folding); returns a PruneResult."""
        from tinyprune.pruning.complexity import measure_complexity
        from tinyprune.pruning.structured import prune_result

        self.rho_at_freeze = self.leakage()
        if self.rho_at_freeze > 10 * self.crit.rho_min:
            lam, cap = self.controller.value, self.crit.lambda_bounds[1]
            msg = (
                f"tailored: at freezing the pruned gates are still {self.rho_at_freeze:.3g} x the "
                f"median kept gate (target {self.crit.rho_min:g}, lambda {lam:.3g} of at most "
                f"{cap:g}), so the hard prune changes the network; train for more steps or raise "
                "lambda_bounds"
            )
            warnings.warn(msg, stacklevel=2)
        from tinyprune.pruning.gates import fold_gates_

        fold_gates_(model)  # gated outputs of Pset are exact zeros: nothing to fold downstream
        before = measure_complexity(model, self.example_input)
        fold_beta_(self.graph, self.keep, activation)
        self.graph.remove_channels_(self.keep)
        after = measure_complexity(model, self.example_input)
        return prune_result(self.graph, self.keep, before, after, self.crit, "greedy")

    def summary(self) -> dict[str, Any]:
        """Controller and SELECT history."""
        return {
            "lambda": self.controller.value,
            "rho_at_freeze": self.rho_at_freeze,
            "selects": len(self.history),
            "last": self.history[-1] if self.history else {},
        }
