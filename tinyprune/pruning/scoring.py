"""Per-group channel scores: a criterion's per-layer scores reduced over coupled members.

Data-dependent criteria read post-activation features (:func:`capture_features`); under DDP the
group scores are averaged over replicas (:func:`reduce_scores_across_ranks`) so every replica
removes the same channels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from tinyprune.criteria.base import Granularity, ScoreInput
from tinyprune.errors import ConfigError, PruningError
from tinyprune.pruning.channel_graph import ACT_TYPES, ChannelGraph, Slot, out_first_weight
from tinyprune.pruning.complexity import BN_TYPES, CONVT_TYPES, _run_forward
from tinyprune.pruning.tensors import weight_of
from tinyprune.training import distributed

_Event = tuple[nn.Module, int, torch.Tensor, torch.Tensor]


def capture_features(
    model: nn.Module, layers: Sequence[str], data: Iterable[Any], max_batches: int = 5
) -> dict[str, torch.Tensor]:
    """Post-activation outputs of ``layers`` (conv -> [BN] -> [activation module]) over ``data``.

    The chain is followed by tensor identity, so only module activations are seen; a functional
    activation (``F.relu``) leaves the BN (or conv) output as the feature.
    """
    wanted = {model.get_submodule(n): n for n in layers}
    followers = [m for m in model.modules() if isinstance(m, BN_TYPES + ACT_TYPES)]
    feats: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    for b, batch in enumerate(data):
        if b >= max_batches:
            break
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        events: list[_Event] = []
        inputs: list[Any] = []  # kept alive: a freed input's id() could be a later output's

        def hook(m: nn.Module, inp: Any, out: Any) -> None:
            inputs.append(inp[0])  # noqa: B023
            events.append((m, id(inp[0]), out, out.detach().clone()))  # noqa: B023

        handles = [m.register_forward_hook(hook) for m in list(wanted) + followers]
        try:
            with torch.no_grad():
                _run_forward(model, x)
        finally:
            for h in handles:
                h.remove()
        for m, name in wanted.items():
            feats[name].append(_follow_chain(events, m))
    if not all(feats.values()):
        msg = "the calibration data yielded no batch; pass data with at least one batch"
        raise ConfigError(msg)
    return {n: torch.cat(v) for n, v in feats.items()}


def _follow_chain(events: list[_Event], m: nn.Module) -> torch.Tensor:
    at = next(i for i, e in enumerate(events) if e[0] is m)
    current_id, value = id(events[at][2]), events[at][3]
    later = events[at + 1 :]  # a follower runs after the layer it follows
    for kinds in (BN_TYPES, ACT_TYPES):
        nxt = next((e for e in later if e[1] == current_id and isinstance(e[0], kinds)), None)
        if nxt is not None:
            current_id, value = id(nxt[2]), nxt[3]
    return value


def score_groups(
    graph: ChannelGraph,
    criterion: Any,
    *,
    reduce: str = "mean",
    features: dict[str, torch.Tensor] | None = None,
) -> list[np.ndarray]:
    """One score per channel of every group: member scores reduced by ``mean|sum|max|l2``."""
    if getattr(criterion, "granularity", None) is not Granularity.CHANNEL:
        msg = f"criterion {getattr(criterion, 'name', criterion)!r} is not a channel criterion"
        raise ConfigError(msg)
    out = []
    for group in graph.groups:
        parts = [member_scores(graph, criterion, slot, features) for slot in group.members]
        parts = [p for p in parts if p is not None]
        if not parts:
            msg = (
                f"criterion {criterion.name!r} applies to no layer of group {group.name!r} "
                f"(layers {[m.name for m in group.members]}); pick a criterion that scores "
                "every layer (l1, random, tailored) or ignore these layers"
            )
            raise ConfigError(msg)
        out.append(reduce_group(group.size, parts, reduce))
    return out


def member_scores(
    graph: ChannelGraph, criterion: Any, slot: Slot, features: dict[str, torch.Tensor] | None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(scores, group channel of each score)`` of one member layer, or None if not scored."""
    module = graph.model.get_submodule(slot.name)
    weight = out_first_weight(module)
    grad = weight_of(module).grad
    if grad is not None and isinstance(module, CONVT_TYPES):
        grad = grad.transpose(0, 1)
    inp = ScoreInput(
        name=slot.name,
        weight=weight,
        grad=grad if criterion.needs_grad else None,
        module=module,
        bn=graph.bn_after(slot.name),
        features=None if features is None else features.get(slot.name),
    )
    applies = getattr(criterion, "applies_to", None)
    if applies is not None and not applies(inp):
        return None
    with torch.no_grad():
        s = criterion.score(inp)
    ok = isinstance(s, torch.Tensor) and s.shape == (weight.shape[0],)
    if not ok or not torch.isfinite(s).all():
        got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
        msg = (
            f"criterion {criterion.name!r} returned scores of shape {got} (or non-finite values) "
            f"for layer {slot.name!r}; expected finite values of shape ({weight.shape[0]},)"
        )
        raise PruningError(msg)
    s = s.detach().double()
    if max(slot.idxs, default=-1) >= s.shape[0]:
        msg = (
            f"group slot of layer {slot.name!r} names channel {max(slot.idxs)} but the layer has "
            f"{s.shape[0]}; the traced channel groups are wrong for this model (a custom op "
            "couples channels it should not): declare its channelwise_pruning role or ignore it"
        )
        raise PruningError(msg)
    return s[list(slot.idxs)], torch.tensor(slot.root, dtype=torch.long)


def reduce_group(size: int, parts: list[Any], reduce: str) -> np.ndarray:
    """One score per group channel from the members' :func:`member_scores`."""
    if reduce not in ("mean", "sum", "max", "l2"):
        msg = f"group reduce {reduce!r} is unknown; expected one of: l2, max, mean, sum"
        raise ConfigError(msg)
    count = torch.zeros(size, dtype=torch.float64)
    init = -torch.inf if reduce == "max" else 0.0
    total = torch.full((size,), init, dtype=torch.float64)
    for vals, root in parts:
        count.index_add_(0, root, torch.ones_like(vals))
        if reduce == "max":
            total.scatter_reduce_(0, root, vals, reduce="amax")
        else:
            total.index_add_(0, root, vals * vals if reduce == "l2" else vals)
    if reduce == "mean":
        total = total / count.clamp(min=1)
    elif reduce == "l2":
        total = total.sqrt()
    total[count == 0] = 0.0
    return total.numpy()


def reduce_scores_across_ranks(scores: list[np.ndarray]) -> list[np.ndarray]:
    """Average per-group scores over DDP replicas so every replica prunes the same channels.

    Data-dependent scores (CI from each replica's features, gradient or Taylor terms) differ
    between replicas fed different shards; the mean over replicas is the score over all
    shards (with equal shard sizes). Identity in a single process.

    Raises:
        PruningError: The replicas' groups differ (not the same model on every replica).
    """
    if distributed.get_world_size() <= 1:
        return scores
    sizes = [len(s) for s in scores]
    ref = distributed.broadcast_object(sizes, src=0)
    mismatch = distributed.consensus_mean(np.array([float(ref != sizes)]))
    if mismatch[0] > 0:
        msg = (
            f"replicas have different channel groups (rank 0: {ref}, rank "
            f"{distributed.get_rank()}: {sizes}); every replica must prune the same model"
        )
        raise PruningError(msg)
    flat = distributed.consensus_mean(np.concatenate(scores)) if scores else np.zeros(0)
    return [part.copy() for part in np.split(flat, np.cumsum(sizes)[:-1])]
