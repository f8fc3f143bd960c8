"""Contract, complexity and layout tests of the model zoo."""

from __future__ import annotations

import inspect
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from tinyprune.errors import ConfigError, UnknownNameError
from tinyprune.models import (
    count_macs_params,
    create_model,
    get_model_spec,
    list_models,
    stack_frames,
    stacked_to_frames,
)
from tinyprune.models.rppg import Block2p1d
from tinyprune.models.rppg_2d import temporal_shift

ALL = list_models()
TINY = list_models("test_*")
FULL = [n for n in ALL if not n.startswith("test_")]
KIB, MIB = 1024, 1024 * 1024


@pytest.fixture(autouse=True)
def seed():
    state = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    yield
    torch.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])


def _out_width(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return last.out_features


@pytest.mark.parametrize("name", ALL)
def test_spec_matches_created_model(name):
    spec = get_model_spec(name)
    with torch.device("meta"):
        model = create_model(name)
    assert model.input_shape == spec.input_shape
    assert model.task == spec.task
    assert spec.task in ("classification", "rppg")
    assert set(spec.default_kwargs) == {
        p.name for p in inspect.signature(spec.factory).parameters.values()
    }


@pytest.mark.parametrize("name", ALL)
def test_forward_shape_on_meta(name):
    with torch.device("meta"):
        model = create_model(name).eval()
        y = model(torch.zeros(2, *model.input_shape))
    want = (2, model.frames) if model.task == "rppg" else (2, _out_width(model))
    assert tuple(y.shape) == want


@pytest.mark.parametrize("name", TINY)
def test_tiny_variant_forward_backward(name):
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) < 50_000
    x = torch.randn(3, *model.input_shape)
    y = model(x)
    want = (3, model.frames) if model.task == "rppg" else (3, _out_width(model))
    assert tuple(y.shape) == want
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", TINY)
def test_tiny_variant_deterministic_and_batch_independent(name):
    model = create_model(name).eval()
    x = torch.randn(2, *model.input_shape)
    with torch.no_grad():
        both = model(x)
        one = model(x[1:])
    torch.testing.assert_close(both[1:], one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", FULL)
def test_docstring_states_default_params(name):
    spec = get_model_spec(name)
    with torch.device("meta"):
        model = create_model(name)
    params = sum(p.numel() for p in model.parameters())
    assert f"{params:,}" in spec.factory.__doc__


def test_registry_errors_and_listing():
    with pytest.raises(UnknownNameError, match="did you mean 'physnet'"):
        create_model("physnett")
    with pytest.raises(ConfigError, match="accepted options: .*frames"):
        create_model("test_physnet", depth=3)
    with pytest.raises(ConfigError, match="multiple of 4"):
        create_model("physnet", frames=6)
    model = create_model("micro_cnn", num_classes=None, input_size=None)  # None = default
    assert model.input_shape == (1, 8, 8)
    assert list_models("resnet*") == ["resnet20", "resnet50", "resnet56"]
    assert set(TINY) <= set(ALL) and all(n.startswith("test_") for n in TINY)
    assert {n for n in FULL if get_model_spec(n).tflm_native is False} == {"deeprppg", "physnet"}


def _conv_params(cin: int, cout: int, k: int, bn: bool = True, bias: bool = True) -> int:
    return cin * cout * k + (cout if bias else 0) + (2 * cout if bn else 0)


def test_physnet_matches_methods_table():
    """Hand count from docs/methods.md §6.1: 768,577 params; MACs layer by layer at T=128, 72x72."""
    params = (
        _conv_params(3, 16, 25)
        + _conv_params(16, 32, 27)
        + _conv_params(32, 64, 27)
        + 6 * _conv_params(64, 64, 27)
        + 2 * _conv_params(64, 64, 4)
        + 65
    )
    assert params == 768_577
    t, s = 128, 72
    macs = (
        3 * 16 * 25 * t * (s * s)
        + 16 * 32 * 27 * t * 36**2
        + 32 * 64 * 27 * t * 36**2
        + 2 * 64 * 64 * 27 * 64 * 18**2
        + 2 * 64 * 64 * 27 * 32 * 9**2
        + 2 * 64 * 64 * 27 * 32 * 4**2
        + 64 * 64 * 4 * (32 + 64) * 16
        + 64 * t
    )
    got = count_macs_params(create_model("physnet"))
    assert got == (macs, params)


def test_vgg16_resnet_mobilenet_counts():
    vgg = count_macs_params(create_model("vgg16_cifar"))
    convs = [
        (3, 64, 32),
        (64, 64, 32),
        (64, 128, 16),
        (128, 128, 16),
        (128, 256, 8),
        (256, 256, 8),
        (256, 256, 8),
        (256, 512, 4),
        (512, 512, 4),
        (512, 512, 4),
        (512, 512, 2),
        (512, 512, 2),
        (512, 512, 2),
    ]
    conv_macs = sum(ci * co * 9 * s * s for ci, co, s in convs)
    conv_params = sum(ci * co * 9 + 2 * co for ci, co, _ in convs)
    assert vgg.macs == conv_macs + 512 * 512 + 512 * 10
    assert vgg.params == conv_params + 512 * 513 + 2 * 512 + 513 * 10 == 14_987_722
    r50 = count_macs_params(create_model("resnet50"))
    assert r50.params == 25_557_032  # torchvision resnet50
    assert r50.macs == pytest.approx(4.09e9, rel=0.01)
    r56a = count_macs_params(create_model("resnet56", shortcut="A"))
    assert r56a.params == pytest.approx(0.85e6, rel=0.01)  # HRank/CHIP tables
    assert r56a.macs == pytest.approx(125.49e6, rel=0.001)
    mb = count_macs_params(create_model("mobilenetv2"))
    assert mb.params == 3_504_872  # torchvision mobilenet_v2
    assert mb.macs == pytest.approx(300e6, rel=0.01)  # Sandler et al. Table 4


def test_2d_rppg_paper_widths():
    """docs/methods.md §6.2/§6.4: DeepPhys 533 K params, 51.2 M MACs/frame; EfficientPhys 467 K."""
    dp = count_macs_params(create_model("deepphys", width=32, frames=2))
    branch = 3 * 32 * 9 + 32 + 32 * 32 * 9 + 32 + 32 * 64 * 9 + 64 + 64 * 64 * 9 + 64
    assert dp.params == 2 * branch + 33 + 65 + (3136 * 128 + 128) + 129 == 532_899
    assert dp.macs / 2 == pytest.approx(51.2e6, rel=0.005)
    ep = count_macs_params(create_model("efficientphys", width=32, frames=2))
    assert ep.params == branch + 33 + 65 + 6 + (3136 * 128 + 128) + 129 == 467_337
    assert ep.macs / 2 == pytest.approx(25.8e6, rel=0.005)
    assert count_macs_params(create_model("tscan")) == count_macs_params(create_model("deepphys"))


def test_deeprppg_matches_reconstruction_table():
    got = count_macs_params(create_model("deeprppg"))
    want = (
        _conv_params(3, 16, 27)
        + _conv_params(16, 32, 27)
        + _conv_params(32, 32, 27)
        + _conv_params(32, 64, 27)
        + _conv_params(64, 32, 5, bn=False)
        + _conv_params(32, 1, 1, bn=False)
    )
    assert got.params == want == 108_801


def test_count_macs_params_meta_equals_cpu_and_needs_shape():
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, groups=2), nn.Flatten(), nn.Linear(4 * 5 * 5, 3)
    )
    got_meta = count_macs_params(model, (2, 5, 5))
    assert got_meta == count_macs_params(model, (2, 5, 5), device="cpu")
    assert got_meta.macs == 1 * 4 * 9 * 25 + 100 * 3
    assert got_meta.flops == 2 * got_meta.macs
    assert next(model.parameters()).device.type == "cpu"  # the model was not moved
    with pytest.raises(ConfigError, match="input shape"):
        count_macs_params(model)


class _RankAndOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.max_rank = 0
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.add(func.__name__.split(".")[0])
        for t in tree_flatten((args, kwargs, out))[0]:
            if isinstance(t, torch.Tensor):
                self.max_rank = max(self.max_rank, t.dim())
        return out


@pytest.mark.parametrize("name", [n for n in TINY if get_model_spec(n).tflm_native])
def test_tflm_native_models_stay_rank4_without_3d_ops(name):
    model = create_model(name).eval()
    mode = _RankAndOps()
    with torch.no_grad(), mode:
        model(torch.randn(1, *model.input_shape))
    assert mode.max_rank <= 4
    assert not {o for o in mode.ops if "3d" in o or o.startswith("conv3d")}


@pytest.mark.parametrize("name", ["physnet", "deeprppg"])
def test_3d_models_are_flagged_non_tflm(name):
    model = create_model("test_" + name).eval()
    mode = _RankAndOps()
    with torch.no_grad(), mode:
        model(torch.randn(1, *model.input_shape))
    assert mode.max_rank == 5 and not get_model_spec(name).tflm_native


class _PeakOpBytes(TorchDispatchMode):
    """Largest int8 footprint of one op: its activation inputs plus its outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        ins = [
            t
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor) and not isinstance(t, nn.Parameter) and t.dim() == 4
        ]
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        self.peak = max(self.peak, sum(t.numel() for t in ins + outs))
        return out


@pytest.mark.parametrize("name", ["deepphys", "tscan", "efficientphys", "physnet_2p1d"])
def test_tflm_rppg_defaults_fit_cortex_m7(name):
    """int8 weights < 2 MiB flash; the largest op's tensors leave room in 1 MiB of RAM."""
    model = create_model(name).eval()
    assert sum(p.numel() for p in model.parameters()) < 1 * MIB
    mode = _PeakOpBytes()
    with torch.no_grad(), mode:
        model(torch.randn(1, *model.input_shape))
    assert 0 < mode.peak < 700 * KIB


def test_stacked_layout_matches_clip_frames():
    clip = torch.randn(2, 3, 5, 4, 6)
    frames = stacked_to_frames(stack_frames(clip), 5)
    assert frames.shape == (10, 3, 4, 6)
    for b in range(2):
        for t in range(5):
            torch.testing.assert_close(frames[b * 5 + t], clip[b, :, t])
    nhwc = stack_frames(clip).permute(0, 2, 3, 1)  # what TFLM sees: [B, T*H, W, C]
    torch.testing.assert_close(nhwc.reshape(2, 5, 4, 6, 3), clip.permute(0, 2, 3, 4, 1))


def test_5d_and_stacked_inputs_agree():
    model = create_model("test_tscan").eval()
    clip = torch.randn(2, 6, 4, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(model(clip), model(stack_frames(clip)))
    with pytest.raises(ConfigError, match="expected"):
        model(torch.randn(2, 6, 48))


def test_temporal_shift_matches_5d_reference():
    x = torch.randn(2 * 4, 6, 3, 3)
    got = temporal_shift(x, 4)
    v = x.reshape(2, 4, 6, 3, 3)
    ref = torch.zeros_like(v)
    ref[:, :-1, :2] = v[:, 1:, :2]
    ref[:, 1:, 2:4] = v[:, :-1, 2:4]
    ref[:, :, 4:] = v[:, :, 4:]
    torch.testing.assert_close(got, ref.reshape(8, 6, 3, 3))


def test_2p1d_block_equals_conv3d_factorisation():
    """With an identity spatial conv, the block must equal a (3,1,1) Conv3d on the clip."""
    cin, cout, t, h, w = 3, 5, 6, 4, 4
    block = Block2p1d(cin, cout, mid=cin).eval()
    conv3d = nn.Conv3d(cin, cout, (3, 1, 1), padding=(1, 0, 0))
    block.spatial[1].eps = block.temporal[1].eps = 0.0  # eval BN at init is then identity
    with torch.no_grad():
        block.spatial[0].weight.zero_()
        block.spatial[0].bias.zero_()
        for c in range(cin):
            block.spatial[0].weight[c, c, 1, 1] = 1.0
        block.temporal[0].weight.copy_(conv3d.weight[..., 0])
        block.temporal[0].bias.copy_(conv3d.bias)
        clip = torch.rand(2, cin, t, h, w)  # >= 0: ReLU is identity
        frames = clip.permute(0, 2, 1, 3, 4).reshape(2 * t, cin, h, w)
        got = block(frames, t).reshape(2, t, cout, h, w).permute(0, 2, 1, 3, 4)
        want = F.relu(conv3d(clip))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
