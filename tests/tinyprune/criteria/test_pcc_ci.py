"""PCC + Channel Independence: faithfulness tests of docs/methods.md §3.9."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tiny_nets import PlainCNN, make

import tinyprune.criteria as C
from tinyprune.criteria.pcc_ci import channel_independence, pcc_layer_loss, pcc_matrix
from tinyprune.errors import ConfigError
from tinyprune.pruning import Budget, prune_structured
from tinyprune.pruning import select as sel
from tinyprune.pruning.channel_graph import ChannelGraph
from tinyprune.pruning.scoring import capture_features
from tinyprune.training.hooks import TrainContext


def _brute_ci(a: torch.Tensor) -> torch.Tensor:
    a = a.double()
    full = torch.linalg.svdvals(a).sum(-1)
    out = []
    for c in range(a.shape[1]):
        z = a.clone()
        z[:, c] = 0
        out.append(full - torch.linalg.svdvals(z).sum(-1))
    return torch.stack(out, dim=1)


def _matrices(kind: str, c: int, p: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(c * 100 + p)
    a = torch.randn(3, c, p, generator=g, dtype=torch.float64)
    if kind == "rank_deficient":
        a = torch.randn(3, c, 2, generator=g, dtype=torch.float64) @ torch.randn(
            3, 2, p, generator=g, dtype=torch.float64
        )
    elif kind == "duplicated":
        a[:, 1] = a[:, 0]
        a[:, 3] = 2 * a[:, 2]
    return a


@pytest.mark.parametrize("kind", ["random", "rank_deficient", "duplicated"])
@pytest.mark.parametrize("c,p", [(6, 20), (8, 5)], ids=["gram", "downdate"])
def test_ci_shortcut_equals_brute_force(kind: str, c: int, p: int) -> None:
    a = _matrices(kind, c, p)
    fast, slow = channel_independence(a), _brute_ci(a)
    assert torch.allclose(fast, slow, rtol=1e-6, atol=1e-9 * slow.abs().max().item())


@pytest.mark.parametrize("c,p", [(4, 9), (5, 5)])
def test_orthogonal_rows_ci_is_row_norm(c: int, p: int) -> None:
    q, _ = torch.linalg.qr(
        torch.randn(p, p, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    )
    a = (q[:c] * torch.arange(1, c + 1, dtype=torch.float64)[:, None])[None]
    torch.testing.assert_close(
        channel_independence(a)[0], torch.arange(1, c + 1, dtype=torch.float64)
    )


def test_duplicated_row_has_smaller_ci_than_orthogonal_row() -> None:
    q, _ = torch.linalg.qr(
        torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    )
    a = torch.stack([q[0], q[0], q[1], q[2]])[None]
    ci = channel_independence(a)[0]
    assert ci[0] < ci[2] - 0.1 and ci[1] < ci[2] - 0.1
    assert ci[2] == pytest.approx(1.0)


def test_pcc_matrix_properties() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 4000, generator=g)
    x[:, 1] = 3 * x[:, 0] + 1
    r = pcc_matrix(x)
    torch.testing.assert_close(
        torch.diagonal(r, dim1=1, dim2=2), torch.ones(2, 5), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(r[:, 0, 1], torch.ones(2), atol=1e-4, rtol=0)
    noise = r[:, 2:, 2:][:, ~torch.eye(3, dtype=torch.bool)]
    assert noise.abs().max() < 4 / np.sqrt(4000)


@pytest.mark.parametrize("mode", ["decorrelate", "decorrelate_margin", "correlate"])
def test_pcc_loss_gradcheck(mode: str) -> None:
    x = torch.randn(
        2,
        3,
        3,
        3,
        dtype=torch.float64,
        requires_grad=True,
        generator=torch.Generator().manual_seed(2),
    )
    assert torch.autograd.gradcheck(lambda t: pcc_layer_loss(t, mode, margin=0.05), (x,))


def test_pcc_loss_values_and_dead_channels() -> None:
    base = torch.randn(1, 1, 50, generator=torch.Generator().manual_seed(0))
    same = torch.cat([base, base, torch.zeros(1, 1, 50)], dim=1)  # two identical + one dead channel
    assert pcc_layer_loss(same, "decorrelate").item() == pytest.approx(1.0, abs=1e-3)
    assert pcc_layer_loss(same, "correlate").item() == pytest.approx(0.0, abs=1e-3)
    with pytest.raises(ConfigError, match="pcc mode"):
        pcc_layer_loss(same, "bogus")


@pytest.mark.parametrize("mode,direction", [("decorrelate", -1), ("correlate", +1)])
def test_pcc_hook_moves_correlation(mode: str, direction: int) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 6, 3, padding=1), torch.nn.ReLU())
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    hook = C.get("pcc_ci", lambda_pcc=1.0, pcc_mode=mode).train_hook()
    ctx = TrainContext(model=model, optimizer=opt, lr=0.05)
    hook.on_train_begin(ctx)
    x = torch.randn(8, 2, 8, 8)

    def mean_abs_r() -> float:
        with torch.no_grad():
            f = model(x).reshape(8, 6, -1)
        r = pcc_matrix(f)
        return float(r[:, ~torch.eye(6, dtype=torch.bool)].abs().mean())

    start = mean_abs_r()
    model.train()
    for _ in range(30):
        out = model(x)
        loss = hook.extra_loss(ctx, x, out)
        assert loss is not None
        opt.zero_grad()
        loss.backward()
        opt.step()
    hook.on_train_end(ctx)
    assert direction * (mean_abs_r() - start) > 0.02
    assert hook.summary()["pcc_mode"] == mode
    with torch.no_grad():
        model(x)
    assert hook.extra_loss(ctx, x, out) is None  # hooks removed: nothing captured


def test_adaptive_budget_met_and_maximal() -> None:
    model, x = make(PlainCNN)
    data = [torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    crit = C.get("pcc_ci", min_channels=2, min_fraction=0.0)
    graph = ChannelGraph(copy.deepcopy(model), x)
    cost = graph.cost_model()
    result = prune_structured(
        model, x, crit, Budget(target_flops=0.45, target_params=0.6), data=data, round_to=2
    )
    limits = Budget(target_flops=0.45, target_params=0.6).limits(*cost.dense)
    assert result.macs_after <= limits[0] and result.params_after <= limits[1]
    counts = np.array([len(result.keep[g.name]) for g in graph.groups])
    for g, group in enumerate(graph.groups):
        bigger = [w for w in sel.allowed_widths(group.size, 2, 2) if w > counts[g]]
        if bigger:
            trial = counts.copy()
            trial[g] = bigger[0]
            macs, params = cost.cost(trial)
            assert macs > limits[0] or params > limits[1]


def test_uniform_budget_keeps_one_fraction_and_the_top_ci_channels() -> None:
    model, x = make(PlainCNN)
    data = [torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))]
    feats = capture_features(model, ["c1", "c2", "c3"], data)
    crit = C.get("pcc_ci", mode="uniform_budget", min_channels=1, min_fraction=0.0)
    result = prune_structured(model, x, crit, Budget(target_flops=0.5), data=data, round_to=1)
    assert result.macs_after <= 0.5 * result.macs_before
    fractions = []
    for layer, kept in result.keep.items():
        ci = _brute_ci(torch.relu(feats[layer]).reshape(4, feats[layer].shape[1], -1)).mean(0)
        assert sorted(kept) == sorted(torch.argsort(ci, descending=True)[: len(kept)].tolist())
        fractions.append(len(kept) / ci.numel())
    assert max(fractions) - min(fractions) <= 1 / 12 + 1e-9  # one channel of the 12-wide layer
    with pytest.raises(ConfigError, match="uniform_budget"):
        C.get("pcc_ci", mode="bogus")


def test_chip_fixed_reproduces_chip_kept_indices() -> None:
    model, x = make(PlainCNN)
    data = [torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(7))]
    feats = capture_features(model, ["c1", "c2", "c3"], data)
    sparsity = (0.5, 0.25, 0.0)
    expected = {}
    for layer, s in zip(["c1", "c2", "c3"], sparsity, strict=True):
        ci = _brute_ci(torch.relu(feats[layer]).reshape(4, feats[layer].shape[1], -1)).mean(0)
        c = ci.numel()
        expected[layer] = sorted(torch.argsort(ci, descending=True)[: c - int(s * c)].tolist())
    crit = C.get("pcc_ci", mode="chip_fixed", sparsity=sparsity)
    result = prune_structured(model, x, crit, data=data, round_to=1)
    assert result.keep == expected


def test_the_default_is_the_papers_adaptive_threshold() -> None:
    """``pcc_ci`` selects with one global threshold by default; ``uniform_budget`` is an option."""
    assert C.get("pcc_ci").mode == "adaptive_budget"
    assert C.get("pcc_ci").selection == "global"
    assert C.get("pcc_ci", mode="uniform_budget").selection == "uniform"
