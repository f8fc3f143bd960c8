"""Tests of the unstructured mask engine (docs/methods.md §1.1) and of sparsity_report (T6)."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_nets import mlp
from torch import nn

from tinyprune.criteria.wgj import WGJCriterion
from tinyprune.errors import ConfigError
from tinyprune.pruning import masks as mk
from tinyprune.training.hooks import TrainContext


def train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    crit: WGJCriterion,
    steps: int,
    in_shape: tuple[int, ...] = (16, 8),
):
    ctx = TrainContext(model=model, optimizer=opt, total_steps=steps)
    hook = crit.make_hook()
    hook.on_train_begin(ctx)
    g = torch.Generator().manual_seed(3)
    for _ in range(steps):
        x = torch.randn(in_shape, generator=g)
        opt.zero_grad()
        model(x).square().mean().backward()
        hook.after_backward(ctx)
        opt.step()
        ctx.step += 1
        hook.after_step(ctx)
    return hook, ctx


def test_find_prunable_keeps_first_and_last_dense():
    model = mlp()
    names = [t.name for t in mk.find_prunable(model)]
    assert names == ["2.weight", "4.weight"]
    assert len(mk.find_prunable(model, keep_first_dense=False, keep_last_dense=False)) == 4
    assert [t.name for t in mk.find_prunable(model, exclude=["2"])] == ["4.weight"]


def test_no_prunable_tensor_is_a_config_error():
    with pytest.raises(ConfigError, match="no prunable weight tensor"):
        mk.find_prunable(nn.Sequential(nn.BatchNorm1d(3)))
    with pytest.raises(ConfigError, match="keep_first_dense"):
        mk.find_prunable(nn.Linear(3, 3))


def test_first_and_last_layer_stay_dense_in_training():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    hook, _ = train(
        model, opt, WGJCriterion(sparsity=0.8, delta_t=2, t_start=2, t_f=10, t_end=14), steps=16
    )
    assert (model[0].weight != 0).all() and (model[6].weight != 0).all()
    assert (model[2].weight == 0).float().mean() > 0.5
    assert set(hook.masks.masks) == {"2.weight", "4.weight"}


@pytest.mark.parametrize(
    "opt_factory",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.5),
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.5),
    ],
    ids=["sgd_wd", "adamw", "adam_wd"],
)
def test_weight_decay_and_momentum_do_not_resurrect_zeros(opt_factory):
    model = mlp()
    opt = opt_factory(model.parameters())
    # prune at step 2, then 10 static steps: momentum and decay would move zeros back
    hook, _ = train(
        model, opt, WGJCriterion(sparsity=0.7, delta_t=2, t_start=2, t_f=2, t_end=2), steps=12
    )
    for name, mask in hook.masks.masks.items():
        param = hook.masks.tensors[name].param
        assert (~mask).sum() > 0
        assert (param[~mask] == 0).all()
        for buf in opt.state[param].values():
            if buf.shape == param.shape:
                assert (buf[~mask] == 0).all()
                assert (buf[mask] != 0).any()


def test_layer_floor_and_convtranspose_dim():
    conv_t = nn.ConvTranspose2d(8, 2, 3)  # weight (8, 2, 3, 3): 2 output channels on dim 1
    assert mk.out_channel_dim(conv_t) == 1 and mk.out_channel_dim(nn.Conv2d(2, 8, 3)) == 0
    assert mk.layer_floor(conv_t.weight.shape, 1, 0.01, 4) == 8
    assert mk.layer_floor(conv_t.weight.shape, 0, 0.01, 4) == 32
    assert mk.layer_floor(torch.Size([10, 100]), 0, 0.1, 4) == 100
    assert mk.layer_floor(torch.Size([2, 2]), 0, 0.0, 4) == 4  # capped at the channel size


def test_floor_protected_uses_output_channels_of_convtranspose():
    shape = torch.Size([8, 2, 3, 3])
    score = torch.ones(shape)
    score[:, 1] = 0.01  # output channel 1 is weaker everywhere
    active = torch.ones(shape, dtype=torch.bool).flatten()
    prot = mk.floor_protected(score.flatten(), active, shape, 1, 8, 4).view(shape)
    assert int(prot[:, 0].sum()) == 4 and int(prot[:, 1].sum()) == 4
    wrong = mk.floor_protected(score.flatten(), active, shape, 0, 32, 4).view(shape)
    assert int(wrong[:, 1].sum()) == 0  # dim 0 would leave output channel 1 unprotected


def test_floors_respected_in_global_ranking():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 2, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(2, 16, 3, padding=1),
    )
    with torch.no_grad():
        model[2].weight.mul_(1e-3)  # tiny: global magnitude ranking would empty it
        model[2].weight[:, 1] *= 1e-3  # and its output channel 1 first
    # floors: 8 x 4 + 2 x 4 (dim 1) + 16 x 4 = 104 <= round(0.2 * 576) = 115
    crit = WGJCriterion(
        sparsity=0.8,
        delta_t=1,
        t_start=1,
        t_f=1,
        t_end=1,
        keep_first_dense=False,
        keep_last_dense=False,
        init_sparsity=0.8,
    )
    hook, _ = train(
        model, torch.optim.SGD(model.parameters(), lr=0.0), crit, steps=2, in_shape=(2, 2, 6, 6)
    )
    mask = hook.masks.masks["2.weight"]
    assert int(mask.sum()) == mk.layer_floor(mask.shape, 1, 0.01, 4) == 8
    assert (mask.sum(dim=(0, 2, 3)) >= 4).all()
    assert (hook.masks.masks["0.weight"].flatten(1).sum(1) >= 4).all()
    assert (hook.masks.masks["4.weight"].flatten(1).sum(1) >= 4).all()


def test_selection_breaks_ties_by_index():
    score = torch.tensor([1.0, 0.0, 0.0, 2.0, 0.0])
    cand = torch.tensor([True, True, False, True, True])
    assert mk.smallest_k(score, cand, 2).tolist() == [1, 4]
    assert mk.largest_k(torch.zeros(5), cand, 3).tolist() == [0, 1, 3]


def test_schedules():
    assert mk.cubic_density(0, 0, 10, 1.0, 0.1) == 1.0
    assert mk.cubic_density(10, 0, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert mk.cubic_density(5, 0, 10, 1.0, 0.1) == pytest.approx(0.1 + 0.9 * 0.125)
    assert mk.cosine_fraction(0, 0, 10, 0.3) == pytest.approx(0.3)
    assert mk.cosine_fraction(5, 0, 10, 0.3) == pytest.approx(0.15)
    assert mk.cosine_fraction(10, 0, 10, 0.3) == pytest.approx(0.0)
    assert mk.round_count(2.5) == 3


def test_masks_save_load_roundtrip(tmp_path):
    model = mlp()
    ms = mk.MaskSet(mk.find_prunable(model))
    ms.masks["2.weight"][0, :5] = False
    path = tmp_path / "masks.pt"
    mk.save_masks(ms.state_dict(), path)
    other = mk.MaskSet(mk.find_prunable(mlp()))
    other.load_state_dict(mk.load_masks(path))
    assert torch.equal(other.masks["2.weight"], ms.masks["2.weight"])
    assert other.total_active() == ms.total_active() == ms.numel() - 5
    assert [p.name for p in tmp_path.iterdir()] == ["masks.pt"]  # no temp file left


def test_loading_mismatched_masks_is_a_config_error(tmp_path):
    ms = mk.MaskSet(mk.find_prunable(mlp()))
    with pytest.raises(ConfigError, match="missing"):
        ms.load_state_dict({"2.weight": torch.ones(32, 32, dtype=torch.bool)})
    bad = {"2.weight": torch.ones(32, 31), "4.weight": torch.ones(16, 32)}
    with pytest.raises(ConfigError, match=r"shape \(32, 31\), expected \(32, 32\)"):
        ms.load_state_dict(bad)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="cannot read masks"):
        mk.load_masks(junk)


def _recount(weight: torch.Tensor) -> int:
    return sum(1 for _ in weight.nonzero())


def test_t6_sparsity_report_matches_recount():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 4, 2, stride=2),
        nn.Flatten(),
        nn.Linear(4 * 12 * 12, 5),
    )
    with torch.no_grad():
        for layer in (model[0], model[3], model[5]):
            layer.weight.mul_(torch.rand_like(layer.weight) > 0.6)
        model[5].bias[0] = 0.0
    rep = mk.sparsity_report(model, (2, 3, 13, 13))
    by = {ly.name: ly for ly in rep.layers}
    # output 6x6 for the conv; the transposed conv applies each weight at its 6x6 input positions
    positions = {"0": 36, "3": 36, "5": 1}
    modules = {"0": model[0], "3": model[3], "5": model[5]}
    for name, mod in modules.items():
        nnz = _recount(mod.weight)
        assert by[name].weight_nonzero == nnz
        assert by[name].effective_macs == nnz * positions[name]
        assert by[name].dense_macs == mod.weight.numel() * positions[name]
    assert rep.effective_macs == sum(_recount(m.weight) * positions[n] for n, m in modules.items())
    assert rep.dense_params == sum(p.numel() for p in model.parameters())
    params = model.parameters()
    assert rep.nonzero_params == sum(_recount(p.detach().reshape(-1, 1)) for p in params)
    assert rep.nonzero_params < rep.dense_params
    d = rep.to_dict()
    assert d["layers"][0]["name"] == "0" and "effective MACs" not in str(d)
    assert "eff. MACs" in str(rep) and model.training


def test_sparsity_report_rejects_bad_shape():
    with pytest.raises(ConfigError, match="input_shape"):
        mk.sparsity_report(mlp(), (8,))


def test_apply_masks_weights_and_state():
    layer = nn.Linear(4, 3, bias=False)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    layer(torch.randn(2, 4)).sum().backward()
    opt.step()
    ms = mk.MaskSet(mk.find_prunable(layer, keep_first_dense=False, keep_last_dense=False))
    ms.masks["weight"][1] = False
    ms.apply_(opt)
    assert (layer.weight[1] == 0).all() and (layer.weight[0] != 0).all()
    buf = opt.state[layer.weight]["momentum_buffer"]
    assert (buf[1] == 0).all() and (buf[0] != 0).all()
    assert math.isclose(ms.total_active() / ms.numel(), 2 / 3)
