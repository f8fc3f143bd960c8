"""Simulate a structured pruning without surgery: zero the removed channels, then restore.

Searches that try hundreds of channel choices on one model (the DE of ``cluster_de``) cannot
afford a deep copy, a torch-pruning trace and the surgery per trial on a VGG-16. Zeroing a
removed channel's producing filter (weights and bias) and its BatchNorm affine makes the
channel's output exactly 0 after any zero-preserving activation (ReLU, ELU, tanh, ...), so the
consumers see what they would see in the physically pruned network (methods.md §1.4). BN
statistics of the kept channels are unaffected, which keeps BN recalibration exact too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from tinyprune.pruning.complexity import CONVT_TYPES
from tinyprune.pruning.structured import ChannelGraph, Slot


def _removed_units(slot: Slot, removed: set[int]) -> list[int]:
    return [u for u, r in zip(slot.idxs, slot.root, strict=True) if r in removed]


def _zero_rows(
    module: nn.Module, units: list[int], saved: list[tuple[torch.Tensor, torch.Tensor]]
) -> None:
    idx = torch.tensor(units, dtype=torch.long)
    dim = 1 if isinstance(module, CONVT_TYPES) else 0
    for name in ("weight", "bias"):
        p = getattr(module, name, None)
        if not isinstance(p, torch.Tensor):
            continue
        d = 0 if name == "bias" else dim
        saved.append((p.data, p.data.clone()))
        p.data.index_fill_(d, idx, 0.0)


@contextmanager
def masked_channels(graph: ChannelGraph, keep: Sequence[Sequence[int]]) -> Iterator[None]:
    """Within the block, every channel of group ``g`` not in ``keep[g]`` outputs exactly 0.

    Producing filters (and biases) and the BatchNorm affine parameters of removed channels are
    zeroed in place; everything is restored on exit (BN running statistics are not touched
    here, so a caller that recalibrates them must restore them itself).
    """
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for group, kept in zip(graph.groups, keep, strict=True):
                removed = set(range(group.size)) - {int(i) for i in kept}
                if not removed:
                    continue
                for slot in group.members + group.bns:
                    units = _removed_units(slot, removed)
                    if units:
                        _zero_rows(graph.model.get_submodule(slot.name), units, saved)
        yield
    finally:
        with torch.no_grad():
            for target, original in reversed(saved):
                target.copy_(original)


def bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every BatchNorm buffer (running statistics, counters)."""
    return {
        name: buf.clone()
        for name, buf in model.named_buffers()
        if isinstance(
            model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model,
            nn.modules.batchnorm._BatchNorm,
        )
    }


def restore_bn_state_(
    model: nn.Module, state: dict[str, torch.Tensor], momentum: dict[str, float | None]
) -> None:
    """Put back buffers saved by :func:`bn_state` and the BN momenta."""
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for name, value in state.items():
            buffers[name].copy_(value)
    for name, m in model.named_modules():
        if name in momentum:
            m.momentum = momentum[name]  # type: ignore[assignment]


def bn_momenta(model: nn.Module) -> dict[str, float | None]:
    """The momentum of every BatchNorm (recalibration sets it to None)."""
    return {
        name: m.momentum
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    }
