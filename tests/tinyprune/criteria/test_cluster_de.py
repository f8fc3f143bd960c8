"""Clustering + DE pruning: faithfulness tests of docs/methods.md §4.10."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tiny_nets import PlainCNN, make

import tinyprune.criteria as C
from tinyprune.criteria.cluster_de import (
    ClusterDECriterion,
    crowding_distance,
    descriptors,
    select_in_clusters,
)
from tinyprune.criteria.cluster_search import (
    FitnessOptions,
    PrunedEvaluator,
    SearchOptions,
    cluster_fitness,
    neg_cross_entropy,
    search_clusters,
    search_clusters_report,
)
from tinyprune.criteria.shade import SHADEConfig, shade_de
from tinyprune.errors import PruningError
from tinyprune.pruning import Budget, prune_structured
from tinyprune.pruning.bn_recal import recalibrate_bn_


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
        SHADEConfig(pop=20, gens=100, seed=seed),
    )
    assert result.best_f == 0.0 and np.array_equal(result.best_x, target)
    assert result.evaluations <= 20 * 2 + 20 * 100  # budget: opposition init + NP x G trials


def test_shade_memory_updates_only_on_success() -> None:
    flat = shade_de(lambda k: 0.0, [2] * 3, [9] * 3, SHADEConfig(pop=6, gens=5, seed=1))
    assert flat.memory_updates == 0 and all(
        np.array_equal(m, np.full(5, 0.5)) for m in flat.memory_f
    )
    sphere = shade_de(
        lambda k: -float(np.sum((k - 5) ** 2)), [2] * 3, [9] * 3, SHADEConfig(pop=6, gens=5, seed=1)
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


def test_fitness_scores_the_network_the_final_prune_builds() -> None:
    """The DE evaluates exactly what prune_structured later builds (channels-last aside)."""
    model, x = make(PlainCNN)
    calib, held = _data()
    ks = (("c1", 3), ("c2", 2), ("c3", 4))
    crit = ClusterDECriterion(k_per_layer=ks)
    budget = Budget(target_flops=0.5)
    evaluated = PrunedEvaluator(model, x, budget, round_to=4).pruned(crit)
    reference = copy.deepcopy(model)
    prune_structured(reference, x, crit, budget, round_to=4)
    assert {k: v.shape for k, v in evaluated.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    recalibrate_bn_(reference, calib)
    fit = cluster_fitness(
        model, x, budget, ["c1", "c2", "c3"], calib, held, FitnessOptions(metric="neg_ce")
    )
    value = fit(np.array([k for _, k in ks]))
    assert value == pytest.approx(neg_cross_entropy(reference, held), abs=1e-5)
    other = fit(np.array([2, 2, 2]))
    assert other != value  # the clustering changes which channels stay


def test_search_then_prune_meets_target() -> None:
    model, x = make(PlainCNN)
    calib, held = _data()
    crit = search_clusters(model, x, Budget(target_flops=0.5), calib, held, k_max=6, pop=4, gens=1)
    assert {name for name, _ in crit.k_per_layer} == {"c1", "c2", "c3"}
    assert all(2 <= k <= 6 for _, k in crit.k_per_layer)
    result = prune_structured(model, x, crit, Budget(target_flops=0.5))
    assert result.macs_after <= 0.5 * result.macs_before
    assert C.get("cluster_de").selection == "uniform"


def test_shade_evaluates_a_generation_as_one_batch() -> None:
    sizes: list[int] = []

    def many(xs: list[np.ndarray]) -> list[float]:
        sizes.append(len(xs))
        return [-float(np.sum((x - 5) ** 2)) for x in xs]

    result = shade_de(None, [2] * 4, [9] * 4, SHADEConfig(pop=8, gens=6), evaluate_many=many)
    assert sizes[0] == 16  # uniform init + its opposition (duplicates evaluated once)
    assert all(1 <= n <= 8 for n in sizes[1:]) and len(sizes) == 7
    assert result.evaluations == sum(sizes)


def test_worker_processes_give_the_in_process_search() -> None:
    model, x = make(PlainCNN)
    calib, held = _data()
    budget = Budget(target_flops=0.5)
    args = (model, x, budget, calib, held)
    kw = {"k_max": 6, "pop": 4, "gens": 2, "metric": "neg_ce", "sync_ranks": False}
    one, rep1 = search_clusters_report(*args, SearchOptions(workers=1, **kw))
    two, rep2 = search_clusters_report(*args, SearchOptions(workers=2, **kw))
    assert rep2.workers == 2 and rep1.workers == 1
    assert one.k_per_layer == two.k_per_layer
    assert rep1.best_fitness == pytest.approx(rep2.best_fitness, abs=1e-5)


def test_a_failing_worker_evaluation_names_the_error() -> None:
    model, x = make(PlainCNN)
    calib, held = _data()

    def broken(_model: torch.nn.Module, _batches: object) -> float:
        msg = "metric exploded"
        raise ValueError(msg)

    options = FitnessOptions(metric=broken, sync_ranks=False, workers=2)
    fit = cluster_fitness(
        model, x, Budget(target_flops=0.5), ["c1", "c2", "c3"], calib, held, options
    )
    with fit, pytest.raises(PruningError, match="metric exploded"):
        fit.many([np.array([2, 2, 2]), np.array([3, 3, 3])])


def test_mixed_descriptors_reach_the_search_fitness() -> None:
    """Activation statistics (source 'mixed') change which channels the fitness keeps."""
    model, x = make(PlainCNN)
    calib, held = _data()
    budget = Budget(target_flops=0.5)
    k = np.array([3, 2, 4])
    layers = ["c1", "c2", "c3"]
    kw = {"metric": "neg_ce", "sync_ranks": False}
    weights = cluster_fitness(model, x, budget, layers, calib, held, FitnessOptions(**kw))
    mixed_base = ClusterDECriterion(source="mixed")
    mixed = cluster_fitness(
        model, x, budget, layers, calib, held, FitnessOptions(base=mixed_base, **kw)
    )
    assert mixed.evaluator.features is not None and weights.evaluator.features is None
    keep_w = weights.evaluator.keep(weights.criterion(k))
    keep_m = mixed.evaluator.keep(mixed.criterion(k))
    assert any(not np.array_equal(a, b) for a, b in zip(keep_w, keep_m, strict=True))
    options = SearchOptions(base=mixed_base, k_max=4, pop=4, gens=1, workers=1, **kw)
    crit, _ = search_clusters_report(model, x, budget, calib, held, options)
    assert crit.source == "mixed" and len(crit.k_per_layer) == 3


def test_shade_refuses_a_population_too_small_for_its_mutation() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        shade_de(lambda k: 0.0, [2] * 3, [9] * 3, SHADEConfig(pop=3, gens=1))


def test_transposed_conv_clusters_are_counted_on_its_output_channels() -> None:
    """A ConvTranspose weight is (in, out, ...): k is bounded by its 16 outputs, not 8 inputs."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(8, 16, (4, 1), stride=(2, 1), padding=(1, 0)),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 4, 1),
    ).eval()
    x = torch.randn(2, 3, 8, 8)
    ev = PrunedEvaluator(model, x, Budget(target_flops=0.5), round_to=1)
    slot = next(s for g in ev.graph.groups for s in g.members if s.name == "3")
    a = ev.member_scores(ClusterDECriterion(k_per_layer=(("3", 9),)), slot)
    b = ev.member_scores(ClusterDECriterion(k_per_layer=(("3", 14),)), slot)
    assert not torch.equal(a[0], b[0])  # 9 and 14 clusters of 16 filters rank them differently


def test_evaluator_builds_a_frame_stacked_net_fed_5d_clips() -> None:
    """A 2-D rPPG net takes 5-D clips but has 4-D weights: no channels_last_3d (it would raise)."""
    from tinyprune.models import create_model

    torch.manual_seed(0)
    model = create_model("test_physnet_2p1d").eval()
    clips = torch.randn(2, 3, 8, 16, 16)
    evaluator = PrunedEvaluator(model, clips, Budget(target_flops=0.5), round_to=1)
    first = evaluator.graph.groups[0].members[0].name
    pruned = evaluator.pruned(ClusterDECriterion(k_per_layer=((first, 2),)))
    assert pruned(clips).shape == (2, 8)
