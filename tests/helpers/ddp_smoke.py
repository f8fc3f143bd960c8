"""A tiny CPU data-parallel run that proves the loop's DDP path end to end.

Launch with ``torchrun --standalone --nproc_per_node 2 -m ddp_smoke --out DIR``.
Every rank writes ``DIR/rank{r}.pt`` (final weights, a checkpoint) and ``DIR/rank{r}.json``
(what its hook saw); rank 0 also writes ``DIR/init.pt`` with the weights DDP broadcast at
the start. Replicas must end bit-identical and different from ``init.pt``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tinyprune.config import TrainConfig
from tinyprune.training import distributed
from tinyprune.training.checkpoint import save_checkpoint
from tinyprune.training.hooks import TrainContext, TrainHook
from tinyprune.training.loop import fit

logger = logging.getLogger(__name__)


class _Probe(TrainHook):
    """Records what the loop exposes to hooks under DDP."""

    def __init__(self) -> None:
        self.samples = 0
        self.steps: list[int] = []
        self.seen: dict[str, Any] = {}

    def on_train_begin(self, ctx: TrainContext) -> None:
        self.seen = {
            "rank": ctx.rank,
            "world_size": ctx.world_size,
            "bare_model": not isinstance(ctx.model, nn.parallel.DistributedDataParallel),
        }

    def extra_loss(self, ctx: TrainContext, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        self.samples += int(inputs.shape[0])

    def after_step(self, ctx: TrainContext) -> None:
        self.steps.append(ctx.step)

    def summary(self) -> dict[str, Any]:
        return {**self.seen, "samples": self.samples, "steps": self.steps}


def mlp() -> nn.Module:
    """The smoke test's model: a 6-8-1 MLP (the factory named in its checkpoints' spec)."""
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))


def _data(n: int = 64, seed: int = 123) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen)
    y = x @ torch.randn(6, 1, generator=gen) + 0.1 * torch.randn(n, 1, generator=gen)
    return TensorDataset(x, y)


def run(out: Path, epochs: int = 2) -> dict[str, Any]:
    """Train a 2-layer MLP on this rank's share of a seeded regression set; write results."""
    info = distributed.init_from_env()
    try:
        torch.manual_seed(1000 + info.rank)  # replicas start different; DDP broadcasts rank 0's
        model = mlp()
        spec = {"factory": "ddp_smoke:mlp", "kwargs": {}}
        if info.rank == 0:
            save_checkpoint(out / "init.pt", model, spec, {"rank": 0})
        cfg = TrainConfig(
            epochs=epochs,
            lr=0.05,
            optimizer="sgd",
            batch_size=8,
            seed=7,
            schedule="cosine",
            grad_clip=5.0,
            log_every=0,
        )
        probe = _Probe()
        loader = DataLoader(_data(), batch_size=8, shuffle=True)
        result = fit(
            model, loader, cfg, loss_fn=nn.functional.mse_loss, hooks=[probe], progress=False
        )
        save_checkpoint(out / f"rank{info.rank}.pt", model, spec, {"rank": info.rank})
        report = {"hook": probe.summary(), "history": result.history, "steps": result.steps}
        (out / f"rank{info.rank}.json").write_text(json.dumps(report))
        distributed.barrier()
        return report
    finally:
        distributed.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``--out DIR`` (created) and ``--epochs N``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for rank files")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs")
    args = parser.parse_args(argv)
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=logging.INFO, format=f"[rank {rank}] %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    run(args.out, args.epochs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
