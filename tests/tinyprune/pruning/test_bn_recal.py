"""BatchNorm recalibration after the prune (pruning.bn_recal, PruneConfig.bn_recalib)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from tinyprune.app.jobs import prune_structured_job
from tinyprune.config import FinetuneConfig, PruneConfig
from tinyprune.data import build_dataset
from tinyprune.errors import ConfigError
from tinyprune.models import create_model
from tinyprune.pruning import Budget
from tinyprune.pruning.bn_recal import recalibrate_bn_, sample_batches


def test_recalibrated_statistics_are_those_of_the_images() -> None:
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4, momentum=0.3)
    model = nn.Sequential(conv, bn, nn.ReLU())
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(9.0)
    x = torch.randn(32, 2, 6, 6) * 2 + 1
    batches = list(torch.split(x, 12))  # 12, 12, 8: a short last batch weighs less
    seen = recalibrate_bn_(model, [*batches, x[:1]])  # a one-sample batch is skipped
    with torch.no_grad():
        y = conv(x)
        var = torch.stack([conv(b).var(dim=(0, 2, 3)) * len(b) for b in batches]).sum(0) / 32
    torch.testing.assert_close(bn.running_mean, y.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(bn.running_var, var)  # unbiased per batch, weighted by size
    assert seen == 32 and bn.momentum == 0.3 and not model.training


def test_a_failing_forward_leaves_the_statistics_as_they_were() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    bn = model[1]
    bn.running_mean.fill_(5.0)
    with pytest.raises(RuntimeError):
        recalibrate_bn_(model, [torch.randn(8, 4), torch.randn(8, 5)])  # second: wrong width
    assert torch.equal(bn.running_mean, torch.full((3,), 5.0)) and bn.momentum == 0.1
    assert recalibrate_bn_(model, [torch.randn(1, 4)]) == 0  # nothing usable: kept as well
    assert torch.equal(bn.running_mean, torch.full((3,), 5.0))


def test_a_one_sample_tail_joins_the_previous_batch() -> None:
    x = np.zeros((33, 3), dtype=np.float32)
    assert [len(b) for b in sample_batches(x, 33, seed=0, batch_size=32)] == [33]
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    assert recalibrate_bn_(model, sample_batches(x, 33, seed=0, batch_size=32)) == 33


def test_samples_depend_on_the_seed_only() -> None:
    x = np.arange(100, dtype=np.float32).reshape(100, 1)
    a, b = sample_batches(x, 10, seed=3, batch_size=4), sample_batches(x, 10, seed=3)
    assert [len(t) for t in a] == [4, 4, 2]
    assert torch.equal(torch.cat(a), torch.cat(b))
    assert not torch.equal(torch.cat(a), torch.cat(sample_batches(x, 10, seed=4)))


def _pruned(bn_recalib: int) -> tuple[nn.Module, dict, object]:
    torch.manual_seed(0)
    model, bundle = create_model("micro_cnn", width=16), build_dataset("digits")
    s = PruneConfig(
        epochs=2,
        finetune=FinetuneConfig(epochs=0),
        lr=3e-3,
        progress=False,
        round_to=1,
        bn_recalib=bn_recalib,
    )
    summary = prune_structured_job(model, bundle, "l1", Budget(target_flops=0.5), s)
    return model, summary, bundle


def test_prune_job_recalibrates_the_pruned_network_on_training_images() -> None:
    model, summary, bundle = _pruned(100)
    assert summary["bn_recalibrated_on"] == 100
    conv, bn = model.features[0], model.features[1]
    x = torch.cat(sample_batches(bundle.train.x, 100, seed=0))
    with torch.no_grad():
        torch.testing.assert_close(bn.running_mean, conv(x).mean(dim=(0, 2, 3)))
    _, without, _ = _pruned(0)
    assert without["bn_recalibrated_on"] == 0
    # one-shot l1 at 50 % MACs: the dense statistics ruin the pruned net, recalibrated ones less so
    acc = summary["metric_pruned"]["accuracy"]
    assert acc > without["metric_pruned"]["accuracy"] + 0.1


def test_settings_refuse_a_negative_count() -> None:
    with pytest.raises(ConfigError, match="--bn-recalib"):
        dataclasses.replace(PruneConfig(), bn_recalib=-1)
