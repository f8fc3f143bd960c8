"""Typed access to a module's tensors (``nn.Module.__getattr__`` is typed ``Tensor | Module``)."""

from __future__ import annotations

import pytest
from torch import nn

from tinyprune.pruning.tensors import optional_tensor_attr, tensor_attr, weight_of


def test_the_accessors_return_the_modules_own_tensors() -> None:
    conv = nn.Conv2d(2, 3, 1)
    assert weight_of(conv) is conv.weight
    assert tensor_attr(conv, "bias") is conv.bias
    bn = nn.BatchNorm2d(3)
    assert tensor_attr(bn, "running_mean") is bn.running_mean  # buffers too


def test_a_missing_or_disabled_tensor_is_none_only_where_asked_for() -> None:
    conv = nn.Conv2d(2, 3, 1, bias=False)
    assert optional_tensor_attr(conv, "bias") is None
    assert optional_tensor_attr(conv, "gate") is None
    with pytest.raises(TypeError, match=r"Conv2d\.bias is NoneType, not a tensor"):
        tensor_attr(conv, "bias")
    with pytest.raises(TypeError, match=r"Sequential\.0 is Linear"):
        tensor_attr(nn.Sequential(nn.Linear(1, 1)), "0")
    with pytest.raises(AttributeError):
        weight_of(nn.ReLU())
