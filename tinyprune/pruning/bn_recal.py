"""BatchNorm recalibration after pruning ("adaptive BN", Li et al., EagleEye, ECCV 2020).

After channels are removed, every BatchNorm's running statistics still describe the dense
network, so a pruned network evaluated as is can look far worse than it is (a pruned rPPG net:
~30 bpm HR MAE before, ~1-10 bpm after re-estimating the statistics on a few hundred training
images). The prune job, cluster_de's DE fitness and the unstructured evaluations all use this.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers that keep running statistics."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@torch.no_grad()
def recalibrate_bn_(model: nn.Module, batches: Iterable[Any]) -> int:
    """Re-estimate every BatchNorm's running statistics from ``batches``.

    The mean is the mean over all samples; the variance the sample-weighted mean of the
    batches' unbiased variances (as torch's cumulative average, weighted by batch size).
    Batches of one sample are skipped (no variance; BatchNorm1d refuses them in train mode).
    If a forward pass fails (or no batch is usable), the previous statistics are put back.

    Args:
        model: The network; left in eval mode, BN momenta restored.
        batches: Input tensors, or tuples whose first item is the input.

    Returns:
        The number of samples seen.
    """
    bns = batchnorms(model)
    saved = [(m.momentum, copy.deepcopy(m.state_dict())) for m in bns]
    for m in bns:
        m.reset_running_stats()
    model.train()
    seen = 0
    try:
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            if len(x) < 2:
                continue
            for m in bns:  # a running average weighted by samples (a short last batch counts less)
                m.momentum = len(x) / (seen + len(x))
            model(x)
            seen += len(x)
        if seen == 0:  # nothing usable: keep the statistics the model had
            _restore(bns, saved)
    except BaseException:
        _restore(bns, saved)
        raise
    finally:
        for m, (momentum, _) in zip(bns, saved, strict=True):
            m.momentum = momentum
        model.eval()
    return seen


def _restore(bns: list[nn.modules.batchnorm._BatchNorm], saved: list[Any]) -> None:
    for m, (_, state) in zip(bns, saved, strict=True):
        m.load_state_dict(state)


def sample_batches(
    x: Any, n: int, seed: int, batch_size: int = 64, skip: int = 0
) -> list[torch.Tensor]:
    """``n`` samples of ``x`` (after the first ``skip``) in a seeded order, as float batches.

    The same seed gives the same images on every DDP rank, so recalibrated statistics agree.
    A last batch of one sample joins the one before it.
    """
    order = np.random.default_rng(seed).permutation(len(x))[skip : skip + n]
    order.sort()  # read in storage order (memory-mapped data sets)
    data = torch.from_numpy(np.asarray(x[order], dtype=np.float32))
    batches = list(torch.split(data, max(2, batch_size)))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches
