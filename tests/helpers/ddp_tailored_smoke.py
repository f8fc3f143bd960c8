"""`tailored` under torchrun: its inserted gates and its SELECT state stay identical on replicas.

Launch with ``torchrun --standalone --nproc_per_node 2 -m ddp_tailored_smoke --out DIR``. Every
rank trains a small conv net with no BatchNorm (so ``tailored`` inserts a per-channel gate on
every prunable conv, :mod:`tinyprune.pruning.gates`) on its OWN data shard, with tailored's hook,
to 50 % of MACs, then hard-prunes it. Two ways the gates get in:

* ``early``: ``TailoredCriterion.pruning_hook`` inserts them before the optimizer and DDP exist
  (what ``tinyprune prune`` does): DDP all-reduces their gradients with the weights';
* ``late``: a bare ``TailoredHook`` given to ``fit``, which calls its ``prepare_model`` before
  it builds the optimizer and the DDP wrapper;
* ``custom``: a hand-written DDP loop that calls the hook's methods itself, so the gates are
  inserted in ``on_train_begin`` after DDP wrapped the model: the hook must average their
  gradients (DDP does not know them).

For rank ``r`` and each way it writes ``DIR/rank{r}_{way}.json`` (gates before the hard prune,
the keep sets, lambda, the SELECT history) and ``DIR/rank{r}_{way}.pt`` (the pruned weights).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
from ddp_prune_smoke import CLASSES, IMAGE, shard_data
from torch import nn
from torch.utils.data import DataLoader

from tinyprune.config import TrainConfig
from tinyprune.criteria.tailored import TailoredCriterion, TailoredHook
from tinyprune.pruning.gates import gate_of
from tinyprune.pruning.select import Budget
from tinyprune.training import distributed
from tinyprune.training.hooks import TrainContext
from tinyprune.training.loop import fit

WAYS = ("early", "late", "custom")


def bare_convnet() -> nn.Module:
    """conv-relu x3 (12, 16, 16 channels, no BatchNorm) -> global average pool -> linear."""
    layers: list[nn.Module] = []
    c_in = IMAGE[0]
    for c_out in (12, 16, 16):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, CLASSES)]
    return nn.Sequential(*layers)


def _gates(model: nn.Module) -> dict[str, list[float]]:
    return {n: gate_of(m).tolist() for n, m in model.named_modules() if gate_of(m) is not None}


def _run_way(way: str, rank: int, out: Path) -> None:
    torch.manual_seed(3000 + rank)  # replicas start different; DDP broadcasts rank 0's weights
    model = bare_convnet()
    example = torch.zeros(2, *IMAGE)
    cfg = TrainConfig(epochs=3, lr=0.02, batch_size=16, seed=5, log_every=0)
    loader = DataLoader(shard_data(rank), batch_size=16, shuffle=True)
    crit = TailoredCriterion(select_every=2)
    budget = Budget(target_flops=0.5)
    steps = cfg.epochs * len(loader) // distributed.get_world_size()
    if way == "early":
        hook = crit.pruning_hook(model, example, budget, round_to=1, total_steps=steps)
    else:
        hook = TailoredHook(example, budget, crit, round_to=1)
    if way == "custom":
        _custom_loop(model, hook, rank, cfg)
    else:
        fit(model, loader, cfg, loss_fn=nn.functional.cross_entropy, hooks=[hook], progress=False)
    report: dict[str, Any] = {
        "rank": rank,
        "gates": _gates(model),
        "keep": [k.tolist() for k in hook.keep],
        "lambda": hook.controller.value,
        "history": hook.history,
    }
    hook.freeze_(model)
    torch.save(model.state_dict(), out / f"rank{rank}_{way}.pt")
    tmp = out / f"rank{rank}_{way}.json.tmp"
    tmp.write_text(json.dumps(report))
    os.replace(tmp, out / f"rank{rank}_{way}.json")


def _custom_loop(model: nn.Module, hook: TailoredHook, rank: int, cfg: TrainConfig) -> None:
    """A minimal DDP loop of the user's own: the gates come after the wrapper (on_train_begin)."""
    net = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps = cfg.epochs * 4
    ctx = TrainContext(model=model, optimizer=opt, total_steps=steps, lr=cfg.lr, rank=rank)
    ctx.world_size = distributed.get_world_size()
    hook.on_train_begin(ctx)
    x, y = shard_data(rank).tensors
    for step in range(steps):
        i = (step % 4) * 16
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[i : i + 16]), y[i : i + 16]).backward()
        hook.after_backward(ctx)
        opt.step()
        ctx.step = step + 1
        hook.after_step(ctx)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``--out DIR`` (created)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for rank files")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    info = distributed.init_from_env()
    try:
        for way in WAYS:
            _run_way(way, info.rank, args.out)
        distributed.barrier()
    finally:
        distributed.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
