"""A tiny CPU data-parallel prune run proving that replicas remove the same channels.

Launch with ``torchrun --standalone --nproc_per_node 2 -m ddp_prune_smoke
--out DIR``. Every rank trains a small conv net on its OWN data shard (so data-driven scores
differ between ranks), prunes it to a 50 % MACs budget with each requested criterion, fine-tunes
one epoch and writes, for rank ``r``:

* ``DIR/rank{r}_trained.pt``: the weights before pruning (a state_dict),
* ``DIR/rank{r}_{criterion}.pt``: the pruned, fine-tuned weights (a state_dict),
* ``DIR/rank{r}.json``: kept channels per group for each criterion, plus ``pcc_ci_local``:
  the channels this rank would keep from its own scores alone (``sync_ranks=False``), and the
  clusters per layer chosen by the DE search.

``fit`` averages BN running statistics over replicas after every epoch
(:func:`~tinyprune.training.distributed.sync_buffers_`); the run records in
``buffers_differed_after_fit`` (one flag per ``fit``) whether any buffer still differs.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tinyprune.config import TrainConfig
from tinyprune.criteria import get as get_criterion
from tinyprune.criteria.cluster_search import SearchOptions, search_clusters_report
from tinyprune.pruning.select import Budget
from tinyprune.pruning.structured import prune_structured
from tinyprune.training import distributed
from tinyprune.training.loop import fit

logger = logging.getLogger(__name__)
CLASSES = 4
IMAGE = (3, 8, 8)
SHARD = 64  # images per rank
CALIB_BATCH = 16


def tiny_convnet() -> nn.Module:
    """conv-bn-relu x3 (16, 24, 24 channels) -> global average pool -> linear (4 classes)."""
    layers: list[nn.Module] = []
    c_in = IMAGE[0]
    for c_out in (16, 24, 24):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, CLASSES)]
    return nn.Sequential(*layers)


def shard_data(rank: int) -> TensorDataset:
    """Rank ``rank``'s images: its own seed, its own brightness offset, shared labelling rule."""
    gen = torch.Generator().manual_seed(500 + rank)
    x = torch.randn(SHARD, *IMAGE, generator=gen) + 0.5 * rank
    rule = torch.randn(IMAGE[0], CLASSES, generator=torch.Generator().manual_seed(9))
    y = (x.mean(dim=(2, 3)) @ rule).argmax(dim=1)
    return TensorDataset(x, y)


def calib_batches(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The calibration batches rank ``rank`` scores channels with (its first 32 images)."""
    x, y = shard_data(rank).tensors
    return [(x[i : i + CALIB_BATCH], y[i : i + CALIB_BATCH]) for i in (0, CALIB_BATCH)]


def _buffers_differ(model: nn.Module) -> bool:
    """True when some buffer differs from rank 0's (checked collectively)."""
    mine = [b.detach().clone() for b in model.buffers()]
    ref = distributed.broadcast_object(mine, src=0)
    return any(not torch.equal(a, b) for a, b in zip(mine, ref, strict=True))


def _train(model: nn.Module, rank: int, epochs: int, lr: float, report: dict[str, Any]) -> None:
    """``fit`` under DDP (which averages BN statistics over replicas after every epoch)."""
    cfg = TrainConfig(epochs=epochs, lr=lr, optimizer="sgd", batch_size=16, seed=3, log_every=0)
    loader = DataLoader(shard_data(rank), batch_size=16, shuffle=True)
    fit(model, loader, cfg, loss_fn=nn.functional.cross_entropy, progress=False)
    report.setdefault("buffers_differed_after_fit", []).append(_buffers_differ(model))


def _keep(result: Any) -> dict[str, list[int]]:
    return {name: list(idx) for name, idx in result.keep.items()}


def _prune_pcc_ci(trained: nn.Module, rank: int, out: Path, report: dict[str, Any]) -> None:
    crit = get_criterion("pcc_ci")
    example = torch.zeros(1, *IMAGE)
    local = copy.deepcopy(trained)
    res = prune_structured(
        local, example, crit, Budget(target_flops=0.5), data=calib_batches(rank), sync_ranks=False
    )
    report["pcc_ci_local"] = _keep(res)
    model = copy.deepcopy(trained)
    res = prune_structured(model, example, crit, Budget(target_flops=0.5), data=calib_batches(rank))
    report["pcc_ci"] = _keep(res)
    report["pcc_ci_macs"] = [res.macs_before, res.macs_after]
    _train(model, rank, epochs=1, lr=0.02, report=report)
    torch.save(model.state_dict(), out / f"rank{rank}_pcc_ci.pt")


def _prune_cluster_de(trained: nn.Module, rank: int, out: Path, report: dict[str, Any]) -> None:
    example = torch.zeros(1, *IMAGE)
    batches = calib_batches(rank)
    budget = Budget(target_flops=0.5)
    options = SearchOptions(k_max=4, pop=4, gens=2, metric="neg_ce")
    crit, search = search_clusters_report(
        trained, example, budget, batches[:1], batches[1:], options
    )
    report["cluster_de_k"] = [list(kv) for kv in crit.k_per_layer]
    report["cluster_de_fitness"] = search.best_fitness
    model = copy.deepcopy(trained)
    res = prune_structured(model, example, crit, budget)
    report["cluster_de"] = _keep(res)
    _train(model, rank, epochs=1, lr=0.02, report=report)
    torch.save(model.state_dict(), out / f"rank{rank}_cluster_de.pt")


def run(out: Path, criteria: tuple[str, ...] = ("pcc_ci", "cluster_de")) -> dict[str, Any]:
    """Train, prune with each criterion, fine-tune and write this rank's files to ``out``."""
    info = distributed.init_from_env()
    try:
        torch.manual_seed(2000 + info.rank)  # replicas start different; DDP broadcasts rank 0's
        model = tiny_convnet()
        report: dict[str, Any] = {"rank": info.rank, "world_size": info.world_size}
        _train(model, info.rank, epochs=2, lr=0.05, report=report)
        model.eval()
        torch.save(model.state_dict(), out / f"rank{info.rank}_trained.pt")
        steps = {"pcc_ci": _prune_pcc_ci, "cluster_de": _prune_cluster_de}
        for name in criteria:
            steps[name](model, info.rank, out, report)
        tmp = out / f"rank{info.rank}.json.tmp"
        tmp.write_text(json.dumps(report))
        os.replace(tmp, out / f"rank{info.rank}.json")
        distributed.barrier()
        return report
    finally:
        distributed.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``--out DIR`` (created) and ``--criteria pcc_ci,cluster_de``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for rank files")
    parser.add_argument(
        "--criteria",
        default="pcc_ci,cluster_de",
        help="comma-separated subset of: pcc_ci, cluster_de",
    )
    args = parser.parse_args(argv)
    criteria = tuple(c for c in args.criteria.split(",") if c)
    unknown = sorted(set(criteria) - {"pcc_ci", "cluster_de"})
    if unknown:
        parser.error(f"unknown criteria {unknown}; expected a subset of pcc_ci, cluster_de")
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=logging.INFO, format=f"[rank {rank}] %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    run(args.out, criteria)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
