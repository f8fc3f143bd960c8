"""Typed access to a module's tensors.

``nn.Module.__getattr__`` is typed as returning ``Tensor | Module``, so ``module.weight`` on a
module of unknown class has no usable type. These helpers narrow it once, and fail with a
message naming the module and the attribute if it is not what the caller needs.
"""

from __future__ import annotations

import torch
from torch import nn


def tensor_attr(module: nn.Module, name: str) -> torch.Tensor:
    """``module.<name>`` (a parameter or buffer) as a tensor.

    Raises:
        TypeError: It is something else (a submodule, None).
    """
    value = getattr(module, name)
    if not isinstance(value, torch.Tensor):
        msg = f"{type(module).__name__}.{name} is {type(value).__name__}, not a tensor"
        raise TypeError(msg)
    return value


def optional_tensor_attr(module: nn.Module, name: str) -> torch.Tensor | None:
    """``module.<name>`` if it is a tensor, else None (a missing or disabled bias, a gate)."""
    value = getattr(module, name, None)
    return value if isinstance(value, torch.Tensor) else None


def weight_of(module: nn.Module) -> torch.Tensor:
    """``module.weight`` as a tensor (conv, linear, affine BatchNorm)."""
    return tensor_attr(module, "weight")
