"""Temporal-shift and attention-mask nets (issue 17): groups, fold rewrite, §1.4 equivalence."""

from __future__ import annotations

import copy

import pytest
import torch

import tinyprune.criteria as C
from tinyprune.models.registry import create_model
from tinyprune.models.rppg_2d import TemporalShift, shift_folds, temporal_shift
from tinyprune.pruning import Budget, measure_complexity, prune_structured
from tinyprune.pruning.channel_graph import ChannelGraph
from tinyprune.pruning.equivalence import zeroed_forward

NETS = ("test_tscan", "test_efficientphys", "test_deepphys")


def _net(name: str, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(seed)
    model = create_model(name).eval()
    x = torch.randn(2, *model.input_shape, generator=torch.Generator().manual_seed(seed + 1))
    return model, x


@pytest.mark.parametrize("name", NETS)
def test_groups_match_layer_widths_and_skip_mask_convs(name: str) -> None:
    model, x = _net(name)
    graph = ChannelGraph(model, x)
    names = [g.name for g in graph.groups]
    assert not any(n.startswith("att") for n in names)  # 1-channel mask convs stay whole
    for g in graph.groups:
        for slot in g.members:
            assert g.size == model.get_submodule(slot.name).out_channels
        for slot in g.consumers:
            assert max(slot.idxs) < model.get_submodule(slot.name).in_channels
    branch = "trunk" if "efficient" in name else "motion"
    assert {f"{branch}.conv{i}" for i in range(1, 5)} <= set(names)


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("crit", ["l1", "random"])
def test_pruned_equals_original_with_removed_channels_zeroed(name: str, crit: str) -> None:
    model, x = _net(name)
    original = copy.deepcopy(model)
    result = prune_structured(model, x, C.get(crit), Budget(target_flops=0.5), round_to=1)
    assert result.macs_after <= 0.5 * result.macs_before
    assert measure_complexity(model, x).macs == result.macs_after
    assert any(len(k) < result.group_sizes[g] for g, k in result.keep.items())
    for i in range(2):
        xi = torch.randn(3, *x.shape[1:], generator=torch.Generator().manual_seed(10 + i))
        with torch.no_grad():
            got = model(xi)
        ref = zeroed_forward(original, x, result.keep, xi)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_shift_folds_are_rewritten_to_the_kept_counts() -> None:
    shift = TemporalShift(frames=3, channels=9)  # folds: next [0, 3), prev [3, 6), stay [6, 9)
    x = torch.randn(6, 9, 2, 2)
    dropped = [0, 1, 4, 8]
    ref = temporal_shift(x, 3)
    shift.remove_channels_(dropped)
    assert (shift.channels, shift.n_next, shift.n_prev) == (5, 1, 2)
    kept = [i for i in range(9) if i not in dropped]
    torch.testing.assert_close(shift(x[:, kept]), ref[:, kept], rtol=0, atol=0)
    shift.remove_channels_([0])  # the next fold is now empty; the shift still works
    assert shift.n_next == 0
    torch.testing.assert_close(shift(x[:, kept[1:]]), ref[:, kept[1:]], rtol=0, atol=0)
    torch.testing.assert_close(shift_folds(x, 3, 3, 3), ref, rtol=0, atol=0)
