"""Clustering + DE pruning: faithfulness tests of methods.md §4.10."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_nets import PlainCNN, make

import tinyprune.criteria as C
from tinyprune.criteria.cluster_de import (
    cluster_fitness,
    crowding_distance,
    descriptors,
    search_clusters,
    select_in_clusters,
    shade_de,
)
from tinyprune.pruning import Budget, prune_structured


def test_delta_identity_for_weight_source() -> None:
    w = torch.randn(6, 3, 3, 3, generator=torch.Generator().manual_seed(0)) + 0.3
    d = descriptors(w)
    mu, var, delta = d[:, 0], d[:, 1], d[:, 2]
    np.testing.assert_allclose(delta, 1 - mu / np.sqrt(mu**2 + var), atol=1e-6)
    assert not np.allclose(descriptors(w, "layer_direction")[:, 2], delta)


def test_crowding_hand_example() -> None:
    pts = np.array([[0.0, 4.0], [1.0, 3.0], [2.0, 2.0], [4.0, 1.0], [5.0, 0.0]])
    d = crowding_distance(pts)
    assert np.isinf(d[0]) and np.isinf(d[4])
    # interior i: (x_next - x_prev)/5 + (y_prev - y_next)/4 along each sorted dimension
    np.testing.assert_allclose(d[1:4], [2 / 5 + 2 / 4, 3 / 5 + 2 / 4, 3 / 5 + 2 / 4])
    assert np.all(np.isinf(crowding_distance(pts[:2])))


@pytest.mark.parametrize("n_keep", [3, 5, 8, 11])
def test_kept_counts_per_cluster(n_keep: int) -> None:
    labels = np.array([0] * 6 + [1] * 4 + [2] * 2)
    rng = np.random.default_rng(0)
    crowd, l1 = rng.random(12), rng.random(12)
    crowd[[0, 6, 10, 11]] = np.inf  # ties at inf are broken by L1 norm
    kept = select_in_clusters(labels, crowd, l1, n_keep)
    counts = np.bincount(labels[kept], minlength=3)
    assert counts.sum() == n_keep and (counts >= 1).all()
    assert np.all(np.abs(counts - n_keep * np.array([6, 4, 2]) / 12) <= 1.0 + 1e-9)
    assert 0 in kept and 6 in kept  # the only inf member of clusters 0 and 1 is always kept
    assert (10 if l1[10] >= l1[11] else 11) in kept  # two inf members: larger L1 norm wins


@pytest.mark.parametrize("seed", [0, 1])
def test_de_finds_optimum_of_integer_sphere(seed: int) -> None:
    target = np.arange(20) % 7 + 3
    result = shade_de(
        lambda k: -float(np.sum((k - target) ** 2)),
        [2] * 20,
        [16] * 20,
        pop=20,
        gens=100,
        seed=seed,
    )
    assert result.best_f == 0.0 and np.array_equal(result.best_x, target)
    assert result.evaluations <= 20 * 2 + 20 * 100  # budget: opposition init + NP x G trials


def test_shade_memory_updates_only_on_success() -> None:
    flat = shade_de(lambda k: 0.0, [2] * 3, [9] * 3, pop=6, gens=5, seed=1)
    assert flat.memory_updates == 0 and all(
        np.array_equal(m, np.full(5, 0.5)) for m in flat.memory_f
    )
    sphere = shade_de(
        lambda k: -float(np.sum((k - 5) ** 2)), [2] * 3, [9] * 3, pop=6, gens=5, seed=1
    )
    assert sphere.memory_updates > 0


def _data() -> tuple[list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
    g = torch.Generator().manual_seed(3)
    calib = [torch.randn(8, 3, 8, 8, generator=g) for _ in range(2)]
    held = [(torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 5, (16,), generator=g))]
    return calib, held


def test_fitness_is_deterministic() -> None:
    model, x = make(PlainCNN)
    calib, held = _data()
    fit = cluster_fitness(model, x, Budget(target_flops=0.5), ["c1", "c2", "c3"], calib, held)
    k = np.array([3, 2, 4])
    assert fit(k) == fit(k)
    assert 0.0 <= fit(k) <= 1.0


def test_search_then_prune_meets_target() -> None:
    model, x = make(PlainCNN)
    calib, held = _data()
    crit = search_clusters(model, x, Budget(target_flops=0.5), calib, held, k_max=6, pop=4, gens=1)
    assert {name for name, _ in crit.k_per_layer} == {"c1", "c2", "c3"}
    assert all(2 <= k <= 6 for _, k in crit.k_per_layer)
    result = prune_structured(model, x, crit, Budget(target_flops=0.5))
    assert result.macs_after <= 0.5 * result.macs_before
    assert C.get("cluster_de").selection == "uniform"
