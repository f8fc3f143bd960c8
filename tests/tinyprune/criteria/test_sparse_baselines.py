"""Tests of the unstructured baselines (gmp, set, rigl) under the shared engine and schedule."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tiny_nets import mlp
from torch import nn

from tinyprune import criteria
from tinyprune.criteria.base import Criterion, Granularity, ScoreInput, Unstructured
from tinyprune.criteria.sparse_baselines import GMPCriterion, RigLCriterion, SETCriterion
from tinyprune.errors import ConfigError
from tinyprune.pruning import masks as mk
from tinyprune.training.hooks import TrainContext


def run(model: nn.Module, crit, steps: int, data_seed: int = 1):
    """Tiny loop; returns the hook and a snapshot of the masks after each update."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ctx = TrainContext(model=model, optimizer=opt, total_steps=steps)
    hook = crit.make_hook()
    hook.on_train_begin(ctx)
    g = torch.Generator().manual_seed(data_seed)
    snaps = []
    for _ in range(steps):
        x = torch.randn(16, 8, generator=g)
        opt.zero_grad()
        model(x).square().mean().backward()
        hook.after_backward(ctx)
        opt.step()
        ctx.step += 1
        n_before = len(hook.records)
        hook.after_step(ctx)
        if len(hook.records) > n_before:
            snaps.append({n: m.clone() for n, m in hook.masks.masks.items()})
    return hook, snaps


SCHED = dict(delta_t=4, t_start=4, t_f=20, t_end=28, sparsity=0.75)
SIZES = {"2.weight": 32 * 32, "4.weight": 16 * 32}


def test_gmp_follows_cubic_schedule_per_layer_and_never_regrows():
    hook, snaps = run(mlp(), GMPCriterion(**SCHED), steps=32)
    assert [r["step"] for r in hook.records] == list(range(4, 29, 4))
    for rec, prev, cur in zip(hook.records, [None, *snaps[:-1]], snaps, strict=True):
        t = rec["step"]
        d = 0.25 + 0.75 * (1 - (min(t, 20) - 4) / 16) ** 3
        for name, n in SIZES.items():
            assert rec["active"][name] == math.floor(d * n + 0.5), (t, name)
        assert rec["n_drop"] == rec["n_regen"] == 0
        if prev is not None:
            for name in SIZES:
                assert not (cur[name] & ~prev[name]).any()  # pruned weights stay pruned


def test_gmp_global_scope_exact_total():
    hook, _ = run(mlp(), GMPCriterion(**SCHED, scope="global"), steps=32)
    assert hook.records[-1]["total_active"] == math.floor(0.25 * sum(SIZES.values()) + 0.5)


def test_gmp_trims_smallest_magnitudes_of_each_layer():
    layer = nn.Linear(10, 4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(40.0).view(4, 10) - 20.0)
    ctx = TrainContext(
        model=layer, optimizer=torch.optim.SGD(layer.parameters(), lr=0.0), total_steps=2, step=1
    )
    hook = GMPCriterion(
        sparsity=0.5,
        delta_t=1,
        t_start=1,
        t_f=1,
        t_end=1,
        min_per_channel=0,
        keep_first_dense=False,
        keep_last_dense=False,
    ).make_hook()
    hook.on_train_begin(ctx)
    hook.after_step(ctx)
    kept = (layer.weight != 0).flatten().nonzero().flatten().tolist()
    assert kept == list(range(0, 10)) + list(range(30, 40))  # |w - 20| largest


def planted_layer(crit, grads: list[torch.Tensor]):
    """A 4x8 layer at 50 % density (right half pruned); ``grads`` are fed to after_backward."""
    layer = nn.Linear(8, 4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(1.0, 33.0).view(4, 8))
    ctx = TrainContext(
        model=layer, optimizer=torch.optim.SGD(layer.parameters(), lr=0.0), total_steps=8, step=0
    )
    hook = crit.make_hook()
    hook.on_train_begin(ctx)
    hook.masks.masks["weight"][:, 4:] = False
    hook.masks.apply_(ctx.optimizer)
    for g in grads:
        layer.weight.grad = g.clone()
        hook.after_backward(ctx)
    ctx.step = 2
    hook.after_step(ctx)
    return layer, hook


BASE = dict(
    sparsity=0.5,
    delta_t=1,
    t_start=2,
    t_f=2,
    t_end=6,
    keep_first_dense=False,
    keep_last_dense=False,
    min_per_channel=0,
    min_density_layer=0.0,
)


def test_rigl_regrows_by_last_gradient():
    early = torch.zeros(4, 8)
    early.view(-1)[[4, 5, 6, 7]] = 100.0  # an old gradient: RigL must ignore it
    last = torch.zeros(4, 8)
    last.view(-1)[[12, 13, 30, 31]] = 1.0
    _, hook = planted_layer(RigLCriterion(**BASE, alpha=0.25), [early, last])
    rec = hook.records[0]
    assert rec["n_trim"] == 0 and rec["drop_fraction"] == pytest.approx(0.25)
    assert rec["n_drop"] == math.ceil(0.25 * 16)
    assert hook.last_dropped["weight"].tolist() == [0, 1, 2, 3]  # smallest |w|
    assert sorted(hook.last_regenerated["weight"].tolist()) == [12, 13, 30, 31]


def test_rigl_drop_fraction_is_cosine_decayed():
    crit = RigLCriterion(alpha=0.3)
    assert crit.drop_fraction(0, 0, 100) == pytest.approx(0.3)
    assert crit.drop_fraction(50, 0, 100) == pytest.approx(0.15)
    assert crit.drop_fraction(100, 0, 100) == pytest.approx(0.0)


def _set_regrown(seed: int, grad_seed: int) -> list[int]:
    g = torch.rand(4, 8, generator=torch.Generator().manual_seed(grad_seed))
    _, hook = planted_layer(SETCriterion(**BASE, zeta=0.25, seed=seed), [g])
    assert hook.records[0]["n_drop"] == hook.records[0]["n_regen"] == 4
    return sorted(hook.last_regenerated["weight"].tolist())


def test_set_regrows_randomly_but_seeded():
    first = _set_regrown(seed=0, grad_seed=0)
    assert first == _set_regrown(seed=0, grad_seed=0)
    assert first == _set_regrown(seed=0, grad_seed=1)  # the gradient plays no part
    others = {tuple(_set_regrown(seed=s, grad_seed=0)) for s in range(1, 6)}
    assert len(others | {tuple(first)}) > 1


def test_set_constant_drop_fraction_in_training():
    # protect_k=0: with protection, connections regrown at the last update cap the count
    hook, _ = run(mlp(), SETCriterion(**SCHED, zeta=0.3, protect_k=0), steps=32)
    for rec in hook.records:
        for name, n_active in rec["active_after_trim"].items():
            assert rec["drop_per_layer"][name] == math.ceil(0.3 * n_active - 1e-9)
        assert rec["drop_per_layer"] == rec["regen_per_layer"]


def test_set_same_seed_same_masks():
    h1, _ = run(mlp(), SETCriterion(**SCHED, seed=7), steps=32)
    h2, _ = run(mlp(), SETCriterion(**SCHED, seed=7), steps=32)
    h3, _ = run(mlp(), SETCriterion(**SCHED, seed=8), steps=32)
    assert all(torch.equal(m, h2.masks.masks[n]) for n, m in h1.masks.masks.items())
    assert not all(torch.equal(m, h3.masks.masks[n]) for n, m in h1.masks.masks.items())
    json.dumps(h1.summary())


def test_unstructured_criteria_register_as_element_criteria():
    assert criteria.names(Granularity.ELEMENT) == ["gmp", "rigl", "set", "wgj"]
    assert "Rigged Lottery" in criteria.help("rigl")
    with pytest.raises(ValueError, match="registered twice"):
        criteria.CRITERIA.register("gmp")(GMPCriterion)


@pytest.mark.parametrize("name", criteria.names(Granularity.ELEMENT))
def test_criterion_contract(name):
    cls = criteria.CRITERIA.get(name)
    crit = cls()
    assert isinstance(crit, Criterion) and crit.granularity is Granularity.ELEMENT
    assert isinstance(crit, Unstructured)
    layer = nn.Conv2d(3, 4, 3)
    inp = ScoreInput(
        name="c", weight=layer.weight.detach(), grad=torch.randn(4, 3, 3, 3), module=layer
    )
    s1, s2 = crit.score(inp), crit.score(inp)
    assert s1.shape == layer.weight.shape and torch.isfinite(s1).all() and torch.equal(s1, s2)
    assert crit.to_dict()["criterion"] == cls.name


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (SETCriterion, {"zeta": 1.0}, "zeta"),
        (RigLCriterion, {"alpha": -0.1}, "alpha"),
        (GMPCriterion, {"sparsity": 1.0}, "outside"),
        (GMPCriterion, {"scope": "model"}, "scope"),
    ],
)
def test_bad_baseline_config(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs)


def test_gmp_schedule_after_training_is_an_error():
    model = mlp()
    ctx = TrainContext(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), total_steps=10
    )
    with pytest.raises(ConfigError, match="does not fit 10 training steps"):
        GMPCriterion(**SCHED).make_hook().on_train_begin(ctx)
    assert mk.round_count(0.5) == 1
