"""The equivalence reference of docs/methods.md §1.4: the original net with removed channels zeroed.

Removing a channel is the same as every consumer seeing 0 on it. :func:`zeroed_forward` runs
the *original* network with forward pre-hooks that zero, at every consumer of a group (its
input channels, or its columns after a flatten), the channels the pruned network lost; the
pruned network must give the same output. The hooks sit on the consumers, so the reference
does not depend on the activation after the producer (tanh, ReLU after BN, gates, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from tinyprune.pruning.channel_graph import ChannelGraph


def removed_inputs(graph: ChannelGraph, keep: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    """Per consumer layer, the input channels (or columns) whose group channel was removed."""
    out: dict[str, set[int]] = {}
    for group in graph.groups:
        kept = {int(i) for i in keep.get(group.name, range(group.size))}
        for slot in group.consumers:
            gone = [i for i, r in zip(slot.idxs, slot.root, strict=True) if r not in kept]
            if gone:
                out.setdefault(slot.name, set()).update(gone)
    return {k: sorted(v) for k, v in out.items()}


def zeroed_forward(
    original: nn.Module, example_input: Any, keep: Mapping[str, Sequence[int]], x: torch.Tensor
) -> torch.Tensor:
    """Output of ``original`` on ``x`` with the channels not in ``keep`` zeroed at consumers.

    Args:
        original: The unpruned network (not modified; eval mode is the caller's choice).
        example_input: A batch to trace its channel groups with.
        keep: Kept channels per group name (``PruneResult.keep``).
        x: The input to compare on.
    """
    graph = ChannelGraph(original, example_input)
    handles = []
    for name, idxs in removed_inputs(graph, keep).items():

        def zero(_m: nn.Module, args: tuple[Any, ...], idxs: list[int] = idxs) -> tuple[Any, ...]:
            t = args[0].clone()
            t[:, idxs] = 0
            return (t, *args[1:])

        handles.append(original.get_submodule(name).register_forward_pre_hook(zero))
    try:
        with torch.no_grad():
            out: torch.Tensor = original(x)
            return out
    finally:
        for h in handles:
            h.remove()
