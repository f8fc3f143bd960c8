"""Cost counting: hand-computed counts, flop_counter cross-check, cost model == measurement."""

from __future__ import annotations

import pytest
import torch
from tiny_nets import ALL_NETS, make
from torch import nn

from tinyprune.pruning.channel_graph import ChannelGraph
from tinyprune.pruning.complexity import flop_counter_macs, measure_complexity


def test_hand_counted_conv_bn_linear() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 2),
    )
    comp = measure_complexity(model.eval(), torch.randn(2, 3, 5, 5))
    assert comp.layer("0").macs == 3 * 4 * 9 * 25
    assert comp.layer("0").params == 3 * 4 * 9
    assert comp.layer("1").params == 8 and comp.layer("1").macs == 0
    assert comp.layer("3").macs == 100 * 2 and comp.layer("3").params == 202
    assert comp.layer("0").activation_bytes == 4 * 25 * 4
    assert comp.flops == 2 * comp.macs


def test_conv_transpose_counts_input_positions() -> None:
    model = nn.ConvTranspose3d(3, 2, (4, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0))
    comp = measure_complexity(model, torch.randn(1, 3, 5, 2, 2))
    assert comp.macs == 3 * 2 * 4 * (5 * 2 * 2)  # docs/methods.md §1.3


def test_nonzero_counts_follow_sparsity() -> None:
    conv = nn.Conv2d(2, 2, 1, bias=False)
    conv.weight.data = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).view(2, 2, 1, 1)
    comp = measure_complexity(conv, torch.randn(1, 2, 3, 3))
    assert comp.macs == 4 * 9 and comp.nnz_macs == 1 * 9
    assert comp.params == 4 and comp.nnz_params == 1


@pytest.mark.parametrize("cls", ALL_NETS, ids=lambda c: c.__name__)
def test_matches_flop_counter(cls: type[nn.Module]) -> None:
    model, x = make(cls)
    assert measure_complexity(model, x).macs == flop_counter_macs(model, x)


@pytest.mark.parametrize("cls", ALL_NETS, ids=lambda c: c.__name__)
def test_cost_model_matches_measurement_after_surgery(cls: type[nn.Module]) -> None:
    model, x = make(cls)
    graph = ChannelGraph(model, x)
    cost = graph.cost_model()
    dense = measure_complexity(model, x)
    assert cost.dense == (dense.macs, dense.params)
    keep = [list(range(0, g.size, 2)) for g in graph.groups]  # every other channel
    graph.remove_channels_(keep)
    after = measure_complexity(model, x)
    counts = [len(k) for k in keep]
    assert cost.cost(counts) == (after.macs, after.params)
