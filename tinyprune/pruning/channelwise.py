"""Channel-wise custom modules (temporal shift, broadcast attention masks) for the channel graph.

torch-pruning couples the inputs of every element-wise op and walks into the slices and
concats of a temporal shift, which gives wrong groups on TS-CAN / EfficientPhys / DeepPhys
(issue 17). A module that declares a class attribute ``channelwise_pruning`` is instead traced
as one node with a customized pruner:

* ``"identity"``: output channel ``i`` is input channel ``i`` (a temporal shift). The module's
  in- and out-channels are coupled, and pruning calls its ``remove_channels_(idxs)`` so that
  it can rewrite its own slice sizes (``channels`` gives its current width).
* ``"broadcast"``: its output broadcasts over the channels it is multiplied with (a 1-channel
  attention mask). Nothing is coupled through it: the gated branch keeps its own group and
  the mask's producer (a 1-channel conv) is left whole.

While the dependency graph is traced, such modules have ``trace_stub = True`` and forward a
plain copy of their input, so the trace sees one node and no inner slicing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, cast

import torch_pruning as tp
from torch import nn

from tinyprune.errors import PruningError

ROLES = ("identity", "broadcast")


class ChannelwiseModule(Protocol):
    """What the pruner uses of a channel-wise module (see the module docstring)."""

    channels: int
    trace_stub: bool

    def remove_channels_(self, idxs: list[int]) -> None:
        """Remove input (= output) channels ``idxs`` and rewrite the module's own sizes."""


# torch-pruning has no type information: its pruner base class is Any to mypy.
class _IdentityPruner(tp.pruner.function.BasePruningFunc):  # type: ignore[misc]
    """In channel ``i`` == out channel ``i``; the module rewrites itself."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        """Remove channels ``idxs`` from the module (its in and out channels are the same)."""
        cast(ChannelwiseModule, layer).remove_channels_(sorted(int(i) for i in idxs))
        return layer

    prune_in_channels = prune_out_channels  # couples in and out channels (torch-pruning rule)

    def get_out_channels(self, layer: nn.Module) -> int:
        """Current width."""
        return int(cast(ChannelwiseModule, layer).channels)

    get_in_channels = get_out_channels


class _BroadcastPruner(tp.pruner.function.BasePruningFunc):  # type: ignore[misc]
    """A broadcast operand: pruning the tensor it gates does not touch it."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        """Nothing to remove: the output has one channel broadcast over the gated branch."""
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        """Nothing to remove (a separate function, so no in/out coupling)."""
        return layer

    def get_out_channels(self, layer: nn.Module) -> None:
        """Unknown (broadcast)."""
        return None

    get_in_channels = get_out_channels


_PRUNERS = {"identity": _IdentityPruner(), "broadcast": _BroadcastPruner()}


def role_of(module: nn.Module) -> str | None:
    """The module's ``channelwise_pruning`` role, or None for ordinary modules."""
    role = getattr(type(module), "channelwise_pruning", None)
    if role is not None and role not in ROLES:
        msg = (
            f"{type(module).__name__}.channelwise_pruning is {role!r}; expected one of: "
            f"{', '.join(ROLES)}"
        )
        raise PruningError(msg)
    return role


def customized_pruners(model: nn.Module) -> dict[type[nn.Module], Any]:
    """torch-pruning ``customized_pruners`` for the channel-wise module types in ``model``."""
    out: dict[type[nn.Module], Any] = {}
    for m in model.modules():
        role = role_of(m)
        if role is not None:
            out[type(m)] = _PRUNERS[role]
    return out


@contextmanager
def tracing_stubs(model: nn.Module) -> Iterator[None]:
    """Set ``trace_stub`` on every channel-wise module for the duration of a trace."""
    mods = [cast(ChannelwiseModule, m) for m in model.modules() if role_of(m) is not None]
    for m in mods:
        m.trace_stub = True
    try:
        yield
    finally:
        for m in mods:
            m.trace_stub = False
