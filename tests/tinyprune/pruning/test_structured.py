"""Surgery: the equivalence test of docs/methods.md §1.4 for every criterion, errors, round_to."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_nets import (
    ALL_NETS,
    DepthwiseNet,
    PlainCNN,
    ResNetTiny,
    keep_lookup,
    make,
    masked_forward,
)
from torch import nn

import tinyprune.criteria as C
from tinyprune.criteria.base import Granularity
from tinyprune.errors import ConfigError, PruningError
from tinyprune.pruning import Budget, PruneOptions, measure_complexity, prune_structured
from tinyprune.pruning.channel_graph import ChannelGraph

STRUCTURED = C.names(Granularity.CHANNEL)
EXTRA = {"cluster_de": {"n_clusters": 2}}


def _prune(
    cls: type[nn.Module], name: str, frac: float = 0.6, round_to: int = 4
) -> tuple[nn.Module, nn.Module, torch.Tensor, dict[str, list[int]]]:
    model, x = make(cls)
    original = copy.deepcopy(model)
    data = [
        torch.randn(4, *x.shape[1:], generator=torch.Generator().manual_seed(i)) for i in range(2)
    ]
    crit = C.get(name, **EXTRA.get(name, {}))
    result = prune_structured(
        model,
        x,
        crit,
        Budget(target_flops=frac),
        data=data,
        round_to=round_to,
        options=PruneOptions(min_channels=4),
    )
    assert result.macs_after <= frac * result.macs_before
    assert measure_complexity(model, x).macs == result.macs_after
    return model, original, x, result.keep


@pytest.mark.parametrize("cls", [ResNetTiny, DepthwiseNet], ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", STRUCTURED)
def test_equivalence_pruned_equals_masked(cls: type[nn.Module], name: str) -> None:
    model, original, x, keep = _prune(cls, name)
    assert any(
        len(k) < size
        for k, size in zip(
            keep.values(),
            [g.size for g in ChannelGraph(copy.deepcopy(original), x).groups],
            strict=True,
        )
    )
    with torch.no_grad():
        pruned_out = model(x)
    masked_out = masked_forward(original, keep_lookup(original, x, keep), x)
    torch.testing.assert_close(
        pruned_out, masked_out, rtol=1e-5, atol=1e-5 * masked_out.abs().max().item()
    )


@pytest.mark.parametrize("cls", ALL_NETS, ids=lambda c: c.__name__)
def test_equivalence_on_every_tiny_net_with_l1(cls: type[nn.Module]) -> None:
    model, original, x, keep = _prune(cls, "l1", frac=0.5, round_to=2)
    with torch.no_grad():
        pruned_out = model(x)
    masked_out = masked_forward(original, keep_lookup(original, x, keep), x)
    torch.testing.assert_close(
        pruned_out, masked_out, rtol=1e-5, atol=1e-5 * masked_out.abs().max().item()
    )


def test_groups_couple_residual_and_depthwise() -> None:
    model, x = make(ResNetTiny)
    graph = ChannelGraph(model, x)
    stem = graph.group_of("a2")
    assert stem.name == "stem" and {s.name for s in stem.consumers} >= {"a1", "w1", "sc"}
    assert {s.name for s in graph.group_of("sc").members} == {"w2", "sc"}
    assert "fc" in graph.ignored  # the classifier's outputs are the model's outputs
    dw, xd = make(DepthwiseNet)
    assert {s.name for s in ChannelGraph(dw, xd).group_of("d1").members} == {"c1", "d1"}


def test_round_to_multiples() -> None:
    model, x = make(PlainCNN)
    result = prune_structured(model, x, C.get("l1"), Budget(target_flops=0.4), round_to=4)
    for name, kept in result.keep.items():
        assert len(kept) % 4 == 0 or len(kept) == result.group_sizes[name]
        assert kept == sorted(kept)


def test_noop_budget_warns_and_keeps_model() -> None:
    model, x = make(PlainCNN)
    before = copy.deepcopy(model.state_dict())
    with pytest.warns(UserWarning, match="nothing will be pruned"):
        result = prune_structured(model, x, C.get("l1"), Budget(target_flops=1.0))
    assert result.macs_after == result.macs_before
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_unreachable_budget_is_a_pruning_error() -> None:
    model, x = make(PlainCNN)
    with pytest.raises(PruningError, match="smallest reachable"):
        prune_structured(
            model, x, C.get("l1"), Budget(target_params=0.001), options=PruneOptions(min_channels=8)
        )


class _NeedsNoGrad(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(x.mean().numpy())  # .numpy() refuses tensors that require grad


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.odd = _NeedsNoGrad()
        self.head = nn.Conv2d(4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.odd(self.conv(x)))


class _HardCodedView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 3, padding=1)
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).reshape(x.shape[0], 8, 16).mean(dim=1))


def test_untraceable_model_names_the_layer() -> None:
    with pytest.raises(PruningError, match=r"layer 'odd' \(_NeedsNoGrad\)"):
        prune_structured(
            _Untraceable(), torch.randn(1, 2, 5, 5), C.get("l1"), Budget(target_flops=0.5)
        )


def test_surgery_breaking_forward_is_a_pruning_error() -> None:
    with pytest.raises(PruningError, match="forward after surgery failed"):
        prune_structured(
            _HardCodedView(),
            torch.randn(1, 2, 4, 4),
            C.get("l1"),
            Budget(target_flops=0.5),
            round_to=1,
        )


def test_element_criterion_is_rejected() -> None:
    model, x = make(PlainCNN)
    if "wgj" not in C.names():
        pytest.skip("no ELEMENT criterion registered in this checkout")
    with pytest.raises(ConfigError, match="not a channel criterion"):
        prune_structured(model, x, C.get("wgj"), Budget(target_flops=0.5))


def test_ignored_layers_stay_whole() -> None:
    model, x = make(PlainCNN)
    result = prune_structured(
        model,
        x,
        C.get("l1"),
        Budget(target_flops=0.5),
        options=PruneOptions(ignored_layers=[model.c2]),
    )
    assert "c2" not in result.keep and model.c2.out_channels == 16
