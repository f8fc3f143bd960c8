"""Count a model's MACs and parameters the way the pruning papers do.

Convention (docs/methods.md §0): MACs are the multiply-accumulates of convolutions (incl.
transposed ones) and matrix products (linear layers); FLOPs = 2 x MACs. BatchNorm,
pooling, activations and element-wise ops count 0 MACs. Params count every parameter,
BatchNorm affine included. The counter is PyTorch's own ``FlopCounterMode`` (it counts
``aten.convolution`` / ``mm`` / ``addmm`` / ``bmm`` as 2 FLOPs per MAC), run on the meta
device by default, so even ResNet-50 or PhysNet at 128 frames costs no compute.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tinyprune.errors import ConfigError


class Complexity(NamedTuple):
    """MACs for one sample and the parameter count (BatchNorm affine included)."""

    macs: int
    params: int

    @property
    def flops(self) -> int:
        """FLOPs = 2 x MACs."""
        return 2 * self.macs


def count_params(model: nn.Module, *, include_bn: bool = True) -> int:
    """Number of parameters of ``model``.

    Args:
        model: Any module.
        include_bn: If False, skip the affine parameters of BatchNorm layers.
    """
    total = 0
    for module in model.modules():
        if not include_bn and isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        total += sum(p.numel() for p in module.parameters(recurse=False))
    return total


def count_macs_params(
    model: nn.Module, input_shape: tuple[int, ...] | None = None, *, device: str = "meta"
) -> Complexity:
    """Count MACs of one forward pass on a single sample, and the parameters.

    Args:
        model: The model; it is not modified (a copy runs on the meta device).
        input_shape: Per-sample input shape without the batch axis; defaults to
            ``model.input_shape``.
        device: ``"meta"`` (no compute, default) or ``"cpu"`` (a real forward pass, for
            models whose forward needs real values).

    Returns:
        ``Complexity(macs, params)`` for batch size 1.

    Raises:
        ConfigError: If no input shape is given and the model has none.
    """
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if shape is None:
        msg = (
            "count_macs_params needs the per-sample input shape, e.g. (3, 32, 32); "
            "pass input_shape= or set model.input_shape"
        )
        raise ConfigError(msg)
    params = count_params(model)
    runner = copy.deepcopy(model).to("meta") if device == "meta" else model
    was_training = runner.training
    runner.eval()
    x = torch.zeros((1, *tuple(shape)), device=device)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            runner(x)
    finally:
        runner.train(was_training)
    return Complexity(macs=int(counter.get_total_flops()) // 2, params=params)
