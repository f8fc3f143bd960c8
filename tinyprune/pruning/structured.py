"""``prune_structured``: score channel groups, select to a budget, remove the rest in place.

Scoring (:mod:`tinyprune.pruning.scoring`), selection (:mod:`tinyprune.pruning.select`) and
surgery (:mod:`tinyprune.pruning.channel_graph`) stay apart (STYLE.md §2); this module runs them
in order, under DDP too, and reports what it did.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from tinyprune.criteria.base import needs_data
from tinyprune.errors import ConfigError
from tinyprune.pruning.channel_graph import ChannelGraph
from tinyprune.pruning.complexity import ModelComplexity, measure_complexity
from tinyprune.pruning.scoring import capture_features, reduce_scores_across_ranks, score_groups
from tinyprune.pruning.select import CostModel
from tinyprune.training import distributed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneResult:
    """What :func:`prune_structured` did: kept channels per group and the cost before/after."""

    keep: dict[str, list[int]]
    group_sizes: dict[str, int]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    criterion: str
    selection: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary for ``summary.json``."""
        return dict(self.__dict__)


def _select(
    criterion: Any,
    selection: str,
    scores: list[np.ndarray],
    cost: CostModel,
    limits: Any,
    widths: list[np.ndarray],
    normalize: str,
    sparsity: Sequence[float] | None,
) -> Any:
    from tinyprune.pruning import select as sel

    given = sparsity if sparsity is not None else getattr(criterion, "sparsity", None)
    rule = sel.SELECTIONS.get(selection)  # unknown name -> UnknownNameError with a close match
    return rule(sel.SelectionInput(scores, cost, limits, widths, normalize, given))


@dataclass(frozen=True)
class PruneOptions:
    """How :func:`prune_structured` combines, selects and protects channels.

    Attributes:
        reduce: How member scores of a coupled group combine; default the criterion's
            ``group_reduce`` or ``"mean"``.
        selection: ``global`` (threshold on normalised scores), ``greedy``, ``uniform`` or
            ``local``; default the criterion's ``selection`` or ``"global"``.
        normalize: Per-group normalisation for ``global`` (``max`` or ``none``).
        min_channels: Minimum width per group (with ``min_fraction``: ``max(min_channels,
            ceil(min_fraction * C))``); default from the criterion, else 1.
        min_fraction: Minimum kept fraction per group; default from the criterion, else 0.
        sparsity: Per-group sparsity for ``local`` selection.
        ignored_layers: Layers whose output channels must stay.
        max_batches: Calibration batches used by data-driven criteria.
    """

    reduce: str | None = None
    selection: str | None = None
    normalize: str = "max"
    min_channels: int | None = None
    min_fraction: float | None = None
    sparsity: Sequence[float] | None = None
    ignored_layers: Sequence[nn.Module] = ()
    max_batches: int = 5


def prune_structured(
    model: nn.Module,
    example_input: Any,
    criterion: Any,
    budget: Any = None,
    *,
    data: Iterable[Any] | None = None,
    round_to: int = 4,
    sync_ranks: bool = True,
    options: PruneOptions | None = None,
) -> PruneResult:
    """Score, select and remove output channels in place so that ``budget`` is met.

    Args:
        model: The network; pruned in place (its train/eval mode is restored).
        example_input: A batch used for tracing and counting (per-sample counts).
        criterion: A CHANNEL criterion (``tinyprune.criteria.get(name)``).
        budget: A :class:`~tinyprune.pruning.select.Budget` (unused by ``selection='local'``).
        data: Calibration batches for criteria with ``needs_data`` (at most
            ``options.max_batches``).
        round_to: Kept widths are multiples of this (or the full width).
        sync_ranks: Under DDP (``torch.distributed`` initialised), average the group scores
            over replicas and adopt rank 0's selection, so every replica removes the same
            channels; BN running statistics are averaged first (:func:`sync_buffers_`).
            Every replica must then call this function (it is a collective). ``False``
            prunes each replica on its own scores (for diagnostics only).
        options: Group reduction, selection rule, minimum widths, protected layers
            (default :class:`PruneOptions`).

    Returns:
        A :class:`PruneResult`.

    Raises:
        PruningError: Untraceable graph, bad scores or an unreachable budget.
        ConfigError: Bad options.
    """
    from tinyprune.pruning import select as sel

    opts = options or PruneOptions()
    selection = opts.selection or getattr(criterion, "selection", None) or "global"
    reduce = opts.reduce or getattr(criterion, "group_reduce", None) or "mean"
    mc, mf = opts.min_channels, opts.min_fraction
    was_training = model.training
    model.eval()
    try:
        if sync_ranks:
            distributed.sync_buffers_(model)
        graph = ChannelGraph(model, example_input, opts.ignored_layers)
        before = measure_complexity(model, example_input)
        cost = graph.cost_model(before)
        limits = (np.inf, np.inf)
        if selection != "local":
            if budget is None:
                msg = f"selection {selection!r} needs a budget (e.g. Budget(target_flops=0.5))"
                raise ConfigError(msg)
            if sel.warn_if_noop(budget):
                return prune_result(graph, None, before, before, criterion, selection)
            limits = budget.limits(*cost.dense)
        features = None
        if needs_data(criterion):
            if data is None:
                msg = f"criterion {criterion.name!r} needs calibration data (data=loader)"
                raise ConfigError(msg)
            layers = [s.name for g in graph.groups for s in g.members]
            features = capture_features(model, layers, data, opts.max_batches)
        scores = score_groups(graph, criterion, reduce=reduce, features=features)
        if sync_ranks:
            scores = reduce_scores_across_ranks(scores)
        mc = mc if mc is not None else getattr(criterion, "min_channels", 1)
        mf = mf if mf is not None else getattr(criterion, "min_fraction", 0.0)
        widths = [
            sel.allowed_widths(g.size, round_to, sel.min_keep_for(g.size, mc, mf))
            for g in graph.groups
        ]
        chosen = _select(
            criterion, selection, scores, cost, limits, widths, opts.normalize, opts.sparsity
        )
        if sync_ranks:
            chosen = _adopt_rank0(chosen)
        graph.remove_channels_(chosen.keep)
        after = measure_complexity(model, example_input)
        if abs(after.macs - chosen.macs) > 0.5 or abs(after.params - chosen.params) > 0.5:
            log.warning(
                "cost model predicted %.0f MACs / %.0f params, measured %d / %d",
                chosen.macs,
                chosen.params,
                after.macs,
                after.params,
            )
        return prune_result(graph, chosen.keep, before, after, criterion, selection)
    finally:
        model.train(was_training)


def _adopt_rank0(chosen: Any) -> Any:
    """Rank 0's selection on every replica (a guard: reduced scores already agree)."""
    if distributed.get_world_size() <= 1:
        return chosen
    ref = distributed.broadcast_object(chosen, src=0)
    same = len(ref.keep) == len(chosen.keep) and all(
        np.array_equal(a, b) for a, b in zip(ref.keep, chosen.keep, strict=True)
    )
    if not same:
        log.warning(
            "rank %d selected other channels than rank 0; using rank 0's selection",
            distributed.get_rank(),
        )
    return ref


def prune_result(
    graph: ChannelGraph,
    keep: Any,
    before: ModelComplexity,
    after: ModelComplexity,
    criterion: Any,
    selection: str,
) -> PruneResult:
    """The :class:`PruneResult` of kept channels ``keep`` (None: all) per group of ``graph``."""
    kept = {
        g.name: (list(range(g.size)) if keep is None else [int(i) for i in keep[i]])
        for i, g in enumerate(graph.groups)
    }
    return PruneResult(
        keep=kept,
        group_sizes={g.name: g.size for g in graph.groups},
        macs_before=before.macs,
        macs_after=after.macs,
        params_before=before.params,
        params_after=after.params,
        criterion=getattr(criterion, "name", type(criterion).__name__),
        selection=selection,
    )
