"""Two-process CPU prune through torchrun: replicas on different shards prune the same channels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ddp_prune_smoke as smoke
import numpy as np
import pytest
import torch

from tinyprune.criteria import get as get_criterion
from tinyprune.criteria.cluster_search import FitnessOptions, cluster_fitness
from tinyprune.pruning.scoring import reduce_scores_across_ranks
from tinyprune.pruning.select import Budget
from tinyprune.pruning.structured import PruneOptions, prune_structured

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, torchrun: Any) -> Path:
    out = tmp_path_factory.mktemp("ddp_prune")
    args = ("--out", str(out))
    proc = torchrun("ddp_prune_smoke", *args, cwd=out, timeout=100)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _reports(out: Path) -> list[dict[str, Any]]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def _state(out: Path, rank: int, tag: str) -> dict[str, torch.Tensor]:
    return torch.load(out / f"rank{rank}_{tag}.pt", weights_only=True)


def _trained_model(out: Path) -> torch.nn.Module:
    model = smoke.tiny_convnet()
    model.load_state_dict(_state(out, 0, "trained"))
    return model.eval()


def test_shards_differ_and_training_is_synchronised(run_dir: Path) -> None:
    assert not torch.equal(smoke.shard_data(0).tensors[0], smoke.shard_data(1).tensors[0])
    s0, s1 = _state(run_dir, 0, "trained"), _state(run_dir, 1, "trained")
    assert all(torch.equal(s0[k], s1[k]) for k in s0)
    r0, r1 = _reports(run_dir)
    # fit itself leaves BN running statistics identical on every replica
    assert not any(r0["buffers_differed_after_fit"] + r1["buffers_differed_after_fit"])


@pytest.mark.parametrize("crit", ["pcc_ci", "cluster_de"])
def test_replicas_keep_same_channels_and_weights(run_dir: Path, crit: str) -> None:
    r0, r1 = _reports(run_dir)
    assert (r0["rank"], r1["rank"], r0["world_size"]) == (0, 1, 2)
    assert r0[crit] == r1[crit]
    s0, s1 = _state(run_dir, 0, crit), _state(run_dir, 1, crit)
    assert s0.keys() == s1.keys()
    for key in s0:
        assert torch.equal(s0[key], s1[key]), f"replicas differ in {key}"
    kept = [len(r0[crit][name]) for name in ("0", "3", "6")]
    assert [s0[f"{i}.weight"].shape[0] for i in (0, 3, 6)] == kept
    assert sum(kept) < 16 + 24 + 24  # something was pruned


def test_unsynchronised_scores_would_diverge(run_dir: Path) -> None:
    r0, r1 = _reports(run_dir)
    assert r0["pcc_ci_local"] != r1["pcc_ci_local"]
    # the local selection is what a single process gets from that rank's shard alone
    model = _trained_model(run_dir)
    alone = prune_structured(
        model,
        torch.zeros(1, *smoke.IMAGE),
        get_criterion("pcc_ci"),
        Budget(target_flops=0.5),
        data=smoke.calib_batches(0),
    )
    assert {k: list(v) for k, v in alone.keep.items()} == r0["pcc_ci_local"]


def test_kept_sets_follow_rank_reduced_scores(run_dir: Path) -> None:
    r0, _ = _reports(run_dir)
    macs_before, macs_after = r0["pcc_ci_macs"]
    assert macs_after <= 0.5 * macs_before
    # mean CI over both shards' images = mean over ranks of each rank's mean (equal shard sizes)
    model = _trained_model(run_dir)
    union = smoke.calib_batches(0) + smoke.calib_batches(1)
    res = prune_structured(
        model,
        torch.zeros(1, *smoke.IMAGE),
        get_criterion("pcc_ci"),
        Budget(target_flops=0.5),
        data=union,
        options=PruneOptions(max_batches=len(union)),
    )
    assert {k: list(v) for k, v in res.keep.items()} == r0["pcc_ci"]


def test_de_fitness_is_the_mean_over_shards(run_dir: Path) -> None:
    r0, r1 = _reports(run_dir)
    assert r0["cluster_de_k"] == r1["cluster_de_k"]
    layers = [name for name, _ in r0["cluster_de_k"]]
    k = np.array([v for _, v in r0["cluster_de_k"]])
    model = _trained_model(run_dir)
    values = []
    for rank in (0, 1):
        batches = smoke.calib_batches(rank)
        fit = cluster_fitness(
            model,
            torch.zeros(1, *smoke.IMAGE),
            Budget(target_flops=0.5),
            layers,
            batches[:1],
            batches[1:],
            FitnessOptions(metric="neg_ce"),
        )
        values.append(fit(k))
    assert abs(values[0] - values[1]) > 1e-4  # each shard alone would be far off
    # channels-last kernels may pick another summation order with another thread count
    assert r0["cluster_de_fitness"] == pytest.approx(np.mean(values), rel=1e-6)


def test_reduction_is_identity_in_one_process() -> None:
    scores = [np.array([0.5, 1.0]), np.array([3.0])]
    out = reduce_scores_across_ranks(scores)
    assert [o.tolist() for o in out] == [[0.5, 1.0], [3.0]]
