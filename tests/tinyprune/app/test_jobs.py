"""The prune job runs each criterion its own way: tailored integrated, cluster_de with its DE."""

from __future__ import annotations

import pytest
import torch

from tinyprune.app.jobs import prune_structured_job
from tinyprune.config import DESearchConfig, FinetuneConfig, PruneConfig
from tinyprune.data import build_dataset
from tinyprune.errors import ConfigError
from tinyprune.models import create_model
from tinyprune.pruning import Budget


def _setup() -> tuple[torch.nn.Module, object]:
    torch.manual_seed(0)
    return create_model("micro_cnn", width=16), build_dataset("digits")


def test_tailored_trains_with_its_hook_then_freezes_at_the_budget() -> None:
    model, bundle = _setup()
    s = PruneConfig(
        epochs=2, finetune=FinetuneConfig(epochs=1), lr=3e-3, progress=False, round_to=1
    )
    summary = prune_structured_job(model, bundle, "tailored", Budget(target_flops=0.5), s)
    assert summary["hook"]["selects"] > 2  # SELECT ran repeatedly during training
    assert summary["prune"]["selection"] == "greedy"
    frac = summary["prune"]["macs_after"] / summary["prune"]["macs_before"]
    assert 0.49 <= frac <= 0.5  # within 2 % of the target (one-channel granularity)
    assert summary["metric_finetuned"]["accuracy"] > 0.5


def test_cluster_de_runs_its_search_and_reports_it() -> None:
    model, bundle = _setup()
    s = PruneConfig(
        epochs=1,
        finetune=FinetuneConfig(epochs=0),
        lr=3e-3,
        progress=False,
        de=DESearchConfig(pop=4, gens=1, calib=64, heldout=64),
    )
    summary = prune_structured_job(model, bundle, "cluster_de", Budget(target_flops=0.5), s)
    search = summary["search"]
    assert (search["pop"], search["gens"]) == (4, 1)
    assert search["calib_images"] == 64 and search["heldout_images"] == 64
    assert search["evaluations"] >= 4
    assert dict(summary["criterion_options"]["k_per_layer"])
    assert summary["prune"]["macs_after"] <= 0.5 * summary["prune"]["macs_before"]


def test_fine_tuning_runs_at_its_own_learning_rate() -> None:
    """--finetune-lr: the same schedule as training, scaled to the fine-tuning peak rate."""
    model, bundle = _setup()
    s = PruneConfig(
        epochs=2, finetune=FinetuneConfig(epochs=2, lr=3e-4), lr=3e-3, progress=False, round_to=1
    )
    summary = prune_structured_job(model, bundle, "l1", Budget(target_flops=0.5), s)
    train, tune = summary["train"]["history"], summary["finetune"]["history"]
    assert train[0]["lr"] > 0
    assert tune[0]["lr"] == pytest.approx(train[0]["lr"] / 10)


def test_fine_tuning_rate_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="--finetune-lr"):
        FinetuneConfig(lr=0.0)


def test_prune_summary_refuses_a_part_it_does_not_know() -> None:
    from tinyprune.app.summary import SCHEMA_VERSION, PruneSummary
    from tinyprune.errors import PruningError

    with pytest.raises(PruningError, match="unknown part"):
        PruneSummary.from_parts(
            {"model": "m", "data": "d", "criterion": "l1", "metric_prunned": {}}
        )
    s = PruneSummary.from_parts(
        {"model": "m", "data": "d", "criterion": "l1", "metric_pruned": {"a": 1.0}}
    )
    assert s.to_dict()["schema_version"] == SCHEMA_VERSION and "metric_trained" not in s.to_dict()
    assert PruneSummary.from_json(s.to_dict() | {"future_field": 1}).final_metric == {"a": 1.0}
