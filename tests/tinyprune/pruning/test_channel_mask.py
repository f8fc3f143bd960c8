"""Masked evaluation (zeroed channels) equals the physically pruned network (methods.md §1.4)."""

from __future__ import annotations

import copy

import numpy as np
import torch
from tiny_nets import PlainCNN, _bn_init_

from tinyprune.criteria.cluster_de import ClusterDECriterion, cluster_fitness
from tinyprune.pruning import Budget, prune_structured
from tinyprune.pruning.channel_mask import masked_channels
from tinyprune.pruning.structured import ChannelGraph


def _model() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return _bn_init_(PlainCNN()), torch.randn(4, 3, 8, 8)


def test_masked_output_equals_pruned_and_weights_are_restored() -> None:
    model, x = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = copy.deepcopy(model)
    result = prune_structured(pruned, x, ClusterDECriterion(), Budget(target_flops=0.4))
    graph = ChannelGraph(model, x)
    keep = [result.keep[g.name] for g in graph.groups]
    assert any(len(k) < g.size for k, g in zip(keep, graph.groups, strict=True))
    with torch.no_grad(), masked_channels(graph, keep):
        masked = model(x)
    torch.testing.assert_close(masked, pruned(x), rtol=1e-5, atol=1e-6)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_masked_fitness_equals_surgery_fitness() -> None:
    model, x = _model()
    g = torch.Generator().manual_seed(1)
    calib = [torch.randn(8, 3, 8, 8, generator=g) for _ in range(2)]
    held = [(torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 5, (16,), generator=g))]
    args = (model, x, Budget(target_flops=0.5), ["c1", "c2", "c3"], calib, held)
    fast = cluster_fitness(*args, metric="neg_ce", masked=True)
    slow = cluster_fitness(*args, metric="neg_ce", masked=False)
    for k in ([3, 2, 4], [2, 2, 2], [5, 6, 3]):
        assert abs(fast(np.array(k)) - slow(np.array(k))) < 1e-5
