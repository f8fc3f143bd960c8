"""Learnable per-channel gates for layers without a BatchNorm (issue 17, ``tailored``).

Gate-based criteria (``tailored``) read BN scales as channel gates. A prunable conv or linear
layer with no BatchNorm after it gets an inserted gate instead: a parameter ``tailored_gate``
(ones, one per output channel) on the layer itself, applied by a forward hook that scales the
layer's output channels. Before the hard prune, :func:`fold_gates_` multiplies each gate into
its layer's weight and bias and removes it, so the network keeps its original structure (and
its traced channel graph) and computes exactly what the gated network computed.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from tinyprune.errors import PruningError
from tinyprune.pruning.complexity import CONVT_TYPES
from tinyprune.pruning.tensors import optional_tensor_attr, tensor_attr, weight_of

GATE = "tailored_gate"
_HOOK = "_tailored_gate_hook"


def gate_of(module: nn.Module) -> nn.Parameter | None:
    """The inserted gate of ``module``, or None."""
    gate = getattr(module, GATE, None)
    return gate if isinstance(gate, nn.Parameter) else None


def _apply_gate(module: nn.Module, _inp: object, out: torch.Tensor) -> torch.Tensor:
    gate = tensor_attr(module, GATE)
    if isinstance(module, nn.Linear):
        return out * gate
    return out * gate.view(1, -1, *([1] * (out.dim() - 2)))


def _out_channels(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, _ConvNd):
        return module.out_channels
    msg = f"cannot gate a {type(module).__name__}: only conv and linear layers have gates"
    raise PruningError(msg)


def insert_gates_(model: nn.Module, layers: Iterable[str]) -> list[nn.Parameter]:
    """Give every layer in ``layers`` a gate of ones (no-op if it has one); returns the new ones.

    The gated network computes the same as before until the gates are trained.
    """
    new = []
    for name in layers:
        module = model.get_submodule(name)
        if gate_of(module) is not None:
            continue
        weight = weight_of(module)
        ones = torch.ones(_out_channels(module), dtype=weight.dtype, device=weight.device)
        module.register_parameter(GATE, nn.Parameter(ones))
        setattr(module, _HOOK, module.register_forward_hook(_apply_gate))
        new.append(getattr(module, GATE))
    return new


def fold_gates_(model: nn.Module) -> int:
    """Fold every inserted gate into its layer's weight and bias and remove it; returns a count."""
    folded = 0
    for name, module in model.named_modules():
        gate = gate_of(module)
        if gate is None:
            continue
        g = gate.detach()
        with torch.no_grad():
            w = weight_of(module)
            dim = 1 if isinstance(module, CONVT_TYPES) else 0
            if w.shape[dim] != g.numel():
                msg = f"gate of {name!r} has {g.numel()} channels, its layer {w.shape[dim]}"
                raise PruningError(msg)
            shape = [1] * w.dim()
            shape[dim] = -1
            w.mul_(g.view(shape))
            bias = optional_tensor_attr(module, "bias")
            if bias is not None:
                bias.mul_(g)
        getattr(module, _HOOK).remove()
        delattr(module, _HOOK)
        del module._parameters[GATE]
        folded += 1
    return folded
