"""Pruning engine: selection (budgets, round_to), channel surgery, masks and cost counting.

Criteria score (``tinyprune.criteria``); this package decides and applies. The structured
entry point is :func:`prune_structured`; submodules are imported lazily where heavy.
"""

from __future__ import annotations

from tinyprune.pruning.channel_graph import ChannelGraph
from tinyprune.pruning.complexity import ModelComplexity, flop_counter_macs, measure_complexity
from tinyprune.pruning.select import Budget, CostModel, Selection
from tinyprune.pruning.structured import PruneOptions, PruneResult, prune_structured

__all__ = [
    "Budget",
    "ChannelGraph",
    "CostModel",
    "ModelComplexity",
    "PruneOptions",
    "PruneResult",
    "Selection",
    "flop_counter_macs",
    "measure_complexity",
    "prune_structured",
]
