"""Registry contract for every structured criterion, plus exact baseline scores."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_nets import ResNetTiny, make
from torch import nn

import tinyprune.criteria as C
from tinyprune.criteria.base import Criterion, Granularity, ScoreInput
from tinyprune.errors import PruningError, UnknownNameError
from tinyprune.pruning.channel_graph import ChannelGraph, out_first_weight
from tinyprune.pruning.scoring import capture_features, score_groups

STRUCTURED = C.names(Granularity.CHANNEL)
EXTRA = {"cluster_de": {"n_clusters": 2}}


def _inputs(name: str) -> tuple[nn.Module, list[ScoreInput]]:
    model, x = make(ResNetTiny)
    graph = ChannelGraph(copy.deepcopy(model), x)
    layers = [s.name for g in graph.groups for s in g.members]
    feats = capture_features(model, layers, [x])
    inputs = []
    for layer in layers:
        module = model.get_submodule(layer)
        bn = model.get_submodule(
            {"stem": "bs", "a1": "ab1", "a2": "ab2", "w1": "wb1", "w2": "wb2", "sc": "scb"}[layer]
        )
        inputs.append(ScoreInput(layer, out_first_weight(module), None, module, bn, feats[layer]))
    return model, inputs


def test_expected_names_registered() -> None:
    assert {"l1", "random", "bn_scale", "pcc_ci", "tailored"} <= set(STRUCTURED)
    assert all(C.help(n) for n in STRUCTURED)


def test_unknown_name_suggests() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'l1'"):
        C.get("l1x")


@pytest.mark.parametrize("name", STRUCTURED)
def test_contract_shape_finite_deterministic_model_unchanged(name: str) -> None:
    crit = C.get(name, **EXTRA.get(name, {}))
    assert isinstance(crit, Criterion) and crit.granularity is Granularity.CHANNEL
    model, inputs = _inputs(name)
    before = copy.deepcopy(model.state_dict())
    for inp in inputs:
        s1, s2 = crit.score(inp), C.get(name, **EXTRA.get(name, {})).score(inp)
        assert s1.shape == (inp.weight.shape[0],)
        assert torch.isfinite(s1).all()
        torch.testing.assert_close(s1, s2, rtol=0, atol=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_l1_exact_on_hand_weights() -> None:
    conv = nn.Conv2d(1, 3, 1, bias=False)
    conv.weight.data = torch.tensor([1.0, -3.0, 2.0]).view(3, 1, 1, 1)
    s = C.get("l1").score(ScoreInput("c", conv.weight.detach(), None, conv))
    assert s.tolist() == [1.0, 3.0, 2.0]


def test_bn_scale_is_abs_gamma_and_needs_bn() -> None:
    conv, bn = nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)
    bn.weight.data = torch.tensor([-0.5, 0.25])
    crit = C.get("bn_scale")
    assert crit.score(ScoreInput("c", conv.weight, None, conv, bn)).tolist() == [0.5, 0.25]
    with pytest.raises(PruningError, match="needs an affine BatchNorm"):
        crit.score(ScoreInput("c", conv.weight, None, conv, None))


def test_random_depends_on_seed_only() -> None:
    conv = nn.Conv2d(1, 6, 1)
    inp = ScoreInput("c", conv.weight, None, conv)
    assert torch.equal(C.get("random", seed=3).score(inp), C.get("random", seed=3).score(inp))
    assert not torch.equal(C.get("random", seed=3).score(inp), C.get("random", seed=4).score(inp))


@pytest.mark.parametrize("reduce", ["mean", "sum", "max", "l2"])
def test_group_reduce_over_residual_members(reduce: str) -> None:
    model, x = make(ResNetTiny)
    graph = ChannelGraph(model, x)
    scores = score_groups(graph, C.get("l1"), reduce=reduce)
    g = [gr.name for gr in graph.groups].index("stem")
    a = C.get("l1").score(ScoreInput("stem", model.stem.weight.detach(), None, model.stem))
    b = C.get("l1").score(ScoreInput("a2", model.a2.weight.detach(), None, model.a2))
    expected = {
        "mean": (a + b) / 2,
        "sum": a + b,
        "max": torch.maximum(a, b),
        "l2": (a * a + b * b).sqrt(),
    }[reduce]
    torch.testing.assert_close(torch.from_numpy(scores[g]), expected.double())
