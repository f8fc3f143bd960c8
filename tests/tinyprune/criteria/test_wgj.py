"""Faithfulness tests T1-T5 and T7 of docs/methods.md §2.10 for the weight-gradient criterion."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from tiny_nets import mlp
from torch import nn

from tinyprune.criteria.wgj import WGJCriterion
from tinyprune.errors import ConfigError
from tinyprune.pruning.dynamic import DynamicSparseHook
from tinyprune.training import distributed
from tinyprune.training.hooks import TrainContext

# Planted groups of T3 in a 4x8 weight, one output row each: A, B, C, D.
A, B, C, D = (set(range(8 * k, 8 * k + 8)) for k in range(4))


def batches(n: int = 6) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 8, generator=g), torch.randn(16, 4, generator=g)) for _ in range(n)]


def run(
    model: nn.Module, crit: WGJCriterion, steps: int, opt_name: str = "sgd"
) -> tuple[DynamicSparseHook, TrainContext]:
    """The tiny loop the brief asks for: forward, loss, backward, hooks, step."""
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        if opt_name == "sgd"
        else torch.optim.Adam(model.parameters(), lr=1e-2)
    )
    ctx = TrainContext(model=model, optimizer=opt, total_steps=steps)
    hook = crit.make_hook()
    hook.on_train_begin(ctx)
    data = batches()
    for i in range(steps):
        x, y = data[i % len(data)]
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        hook.after_backward(ctx)
        opt.step()
        ctx.step += 1
        hook.after_step(ctx)
    hook.on_train_end(ctx)
    return hook, ctx


SCHED = dict(delta_t=5, t_start=5, t_f=30, t_end=45, sparsity=0.8)


def test_t1_schedule_exact_active_counts():
    hook, _ = run(mlp(), WGJCriterion(**SCHED), steps=60)
    n_total = 32 * 32 + 32 * 16  # first and last layer dense
    steps = [r["step"] for r in hook.records]
    assert steps == list(range(5, 46, 5))
    for r in hook.records:
        t = r["step"]
        if t <= 30:
            d = 0.2 + 0.8 * (1 - (t - 5) / 25) ** 3
            assert r["total_active"] == math.floor(d * n_total + 0.5), t
        else:
            assert r["total_active"] == math.floor(0.2 * n_total + 0.5), t
    assert hook.masks is not None
    assert hook.masks.total_active() == math.floor(0.2 * n_total + 0.5)


def test_t2_conservation_per_layer():
    hook, _ = run(mlp(), WGJCriterion(**SCHED), steps=60)
    assert sum(r["n_drop"] for r in hook.records) > 0
    for r in hook.records:
        assert r["drop_per_layer"] == r["regen_per_layer"]
        assert r["active"] == r["active_after_trim"]
        assert r["n_regen"] == r["n_drop"]


def planted(
    crit: WGJCriterion, opt: torch.optim.Optimizer | None = None
) -> tuple[nn.Linear, DynamicSparseHook, TrainContext]:
    """A 4x8 layer, groups A (|w| big, g small), B (small, big), C (small, small), D (big, big)."""
    layer = nn.Linear(8, 4, bias=False)
    opt = opt or torch.optim.SGD(layer.parameters(), lr=0.1)
    ctx = TrainContext(model=layer, optimizer=opt, total_steps=4, step=0)
    hook = crit.make_hook()
    hook.on_train_begin(ctx)
    plant(layer, hook)
    return layer, hook, ctx


def plant(layer: nn.Linear, hook: DynamicSparseHook) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[5.0] * 8, [0.1] * 8, [0.1] * 8, [5.0] * 8]))
    hook.gbar["weight"] = torch.tensor([[0.01] * 8, [10.0] * 8, [0.01] * 8, [10.0] * 8])


T3 = dict(
    sparsity=0.125,
    delta_t=1,
    t_start=1,
    t_f=1,
    t_end=3,
    r0=0.3,
    keep_first_dense=False,
    keep_last_dense=False,
    min_density_layer=0.0,
    min_per_channel=0,
)


@pytest.mark.parametrize("keep_score", ["ratio", "exp"])
def test_t3_planted_types(keep_score):
    _, hook, ctx = planted(WGJCriterion(**T3, keep_score=keep_score))
    ctx.step = 1
    hook.after_step(ctx)
    rec = hook.records[0]
    mask = hook.masks.masks["weight"].flatten()
    assert rec["n_trim"] == 4  # 32 -> round(0.875 * 32) = 28
    trimmed = {i for i in C if not mask[i]}
    assert len(trimmed) >= 3 and all(mask[i] for i in A | D)  # trim only from C
    assert rec["types"]["trim"] == {"w_lo_g_lo": 4, "w_hi_g_lo": 0, "w_lo_g_hi": 0, "w_hi_g_hi": 0}
    assert rec["n_drop"] == math.ceil(0.3 * 28)
    # drop: all of B first, then C; never A or D
    assert rec["types"]["drop"] == {"w_lo_g_lo": 1, "w_hi_g_lo": 0, "w_lo_g_hi": 8, "w_hi_g_hi": 0}
    regrown = set(hook.last_regenerated["weight"].tolist())
    assert regrown >= B  # regrow from B's positions
    assert all(mask[i] for i in B)
    assert rec["regen_just_dropped"] >= 8


@pytest.mark.parametrize("protect_k", [0, 1])
def test_protection_window(protect_k):
    _, hook, ctx = planted(WGJCriterion(**{**T3, "protect_k": protect_k}))
    ctx.step = 1
    hook.after_step(ctx)  # B regrown at weight 0 -> the lowest I_keep next time
    ctx.step = 2
    hook.after_step(ctx)
    rec = hook.records[1]
    assert rec["n_trim"] == 0 and rec["n_drop"] == math.ceil(0.15 * 28 - 1e-9)
    dropped = set(hook.last_dropped["weight"].tolist())
    assert len(dropped) == rec["n_drop"]
    if protect_k == 1:
        assert not dropped & B  # regrown at the last update: protected
        assert dropped == {21, 22, 23} | set(sorted(D)[:2])  # C left, then lowest I_keep of D
    else:
        assert dropped <= B  # weight 0 after regrowth: the lowest I_keep


def test_t4_dense_gradient_at_pruned_positions():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ctx = TrainContext(model=model, optimizer=opt, total_steps=10)
    hook = WGJCriterion(
        sparsity=0.5, init_sparsity=0.5, t_start=1, t_f=5, t_end=8, delta_t=1
    ).make_hook()
    hook.on_train_begin(ctx)
    mask = hook.masks.masks["2.weight"]
    assert (~mask).sum() > 0 and (model[2].weight[~mask] == 0).all()
    model(torch.randn(2, 3, 10, 10)).square().mean().backward()
    assert model[2].weight.grad[~mask].abs().sum() > 0


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_t5_regenerated_optimizer_state_is_zero(opt_name):
    layer = nn.Linear(8, 4, bias=False)
    opt = (
        torch.optim.SGD(layer.parameters(), lr=0.01, momentum=0.9)
        if opt_name == "sgd"
        else torch.optim.Adam(layer.parameters(), lr=0.01)
    )
    crit = WGJCriterion(**{**T3, "t_start": 4, "t_f": 4, "t_end": 6})
    ctx = TrainContext(model=layer, optimizer=opt, total_steps=8)
    hook = crit.make_hook()
    hook.on_train_begin(ctx)
    for _ in range(4):
        opt.zero_grad()
        layer(torch.randn(5, 8)).square().mean().backward()
        opt.step()
        ctx.step += 1
        if ctx.step < 4:
            hook.after_step(ctx)
    plant(layer, hook)
    state = [v for v in opt.state[layer.weight].values() if v.shape == layer.weight.shape]
    assert state and all(bool((s.flatten()[sorted(B)] != 0).all()) for s in state)
    hook.after_step(ctx)  # the update at step 4: B dropped and regrown
    regen = hook.last_regenerated["weight"]
    assert set(regen.tolist()) >= B
    for s in state:
        assert (s.flatten()[regen] == 0).all()
    assert (layer.weight.flatten()[regen] == 0).all()


def test_restore_regrows_the_dropped_value():
    layer, hook, ctx = planted(WGJCriterion(**{**T3, "regrow_init": "restore"}))
    ctx.step = 1
    hook.after_step(ctx)
    w = layer.weight.detach().flatten()
    assert all(abs(float(w[i]) - 0.1) < 1e-6 for i in B)


def test_gradient_ema_beta():
    layer = nn.Linear(3, 2, bias=False)
    ctx = TrainContext(
        model=layer, optimizer=torch.optim.SGD(layer.parameters(), lr=0.1), total_steps=10
    )
    hook = WGJCriterion(**{**T3, "beta_g": 0.9, "t_end": 5}).make_hook()
    hook.on_train_begin(ctx)
    for g in (2.0, -4.0):
        layer.weight.grad = torch.full((2, 3), g)
        hook.after_backward(ctx)
    expected = 0.9 * (0.1 * 2.0) + 0.1 * 4.0
    assert torch.allclose(hook.gbar["weight"], torch.full((2, 3), expected))


def test_t7_same_seed_same_masks_and_json_summary():
    h1, _ = run(mlp(), WGJCriterion(**SCHED), steps=50, opt_name="adam")
    h2, _ = run(mlp(), WGJCriterion(**SCHED), steps=50, opt_name="adam")
    for name, m in h1.masks.masks.items():
        assert torch.equal(m, h2.masks.masks[name])
    summary = json.loads(json.dumps(h1.summary()))
    assert summary["config"]["criterion"] == "wgj"
    assert len(summary["updates"]) == 9
    assert set(summary["mean_survival"]) == {"1", "2", "5"}
    assert all(0.0 <= v <= 1.0 for v in summary["mean_survival"].values())


def test_taylor_trim_score_and_score_shape():
    w = torch.tensor([[1.0, -2.0], [0.0, 4.0]])
    g = torch.tensor([[1.0, 1.0], [3.0, 3.0]])

    class Inp:
        weight, grad = w, g

    joint = WGJCriterion().score(Inp())
    taylor = WGJCriterion(trim_score="taylor").score(Inp())
    wn, gn = w.abs() / (7.0 / 3), g / 2.0
    assert joint.shape == w.shape
    assert torch.allclose(joint, wn + gn) and torch.allclose(taylor, wn * gn)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sparsity": 1.0}, "sparsity 1.0 is outside"),
        ({"sparsity": -0.1}, "outside"),
        ({"init_sparsity": 0.5, "sparsity": 0.3}, "init_sparsity"),
        ({"r0": 1.5}, "r0"),
        ({"trim_score": "rank"}, "trim_score"),
        ({"keep_score": "rank"}, "keep_score"),
        ({"regrow_init": "random"}, "regrow_init"),
        ({"delta_t": 0}, "delta_t"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        WGJCriterion(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"t_end": 70}, "does not fit 60 training steps"),
        ({"t_f": 61, "t_end": 61}, "does not fit"),
        ({"t_f": 40, "t_end": 30}, "t_start <= t_f <= t_end"),
        ({"sparsity": 0.95}, "floors need"),
    ],
)
def test_bad_schedule(kwargs, match):
    model = mlp()
    ctx = TrainContext(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), total_steps=60
    )
    with pytest.raises(ConfigError, match=match):
        WGJCriterion(**{**SCHED, **kwargs}).make_hook().on_train_begin(ctx)


def test_no_prunable_tensor():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    ctx = TrainContext(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), total_steps=60
    )
    with pytest.raises(ConfigError, match="no prunable weight tensor"):
        WGJCriterion(**SCHED).make_hook().on_train_begin(ctx)


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        model = mlp()
        ddp = DistributedDataParallel(model)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        ctx = TrainContext(model=model, optimizer=opt, total_steps=30, rank=rank, world_size=world)
        hook = WGJCriterion(**{**SCHED, "t_f": 15, "t_end": 25}).make_hook()
        hook.on_train_begin(ctx)
        g = torch.Generator().manual_seed(100 + rank)  # each replica sees different data
        for _ in range(30):
            opt.zero_grad()
            ddp(torch.randn(8, 8, generator=g)).square().mean().backward()
            hook.after_backward(ctx)
            opt.step()
            ctx.step += 1
            hook.after_step(ctx)
        torch.save(hook.masks.state_dict(), f"{out}/rank{rank}.pt")
    finally:
        distributed.cleanup()


@pytest.mark.timeout(120)
def test_masks_identical_on_every_rank_under_ddp(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    m0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    m1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert m0.keys() == m1.keys() and all(torch.equal(m0[k], m1[k]) for k in m0)
    assert sum(int(m.sum()) for m in m0.values()) == math.floor(0.2 * (32 * 32 + 32 * 16) + 0.5)
