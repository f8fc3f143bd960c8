"""The 3-D -> 2-D rewrite (time as batch) computes what the 3-D layers compute, in 2-D ops.

Each layer kind is checked for float equality against PyTorch's 3-D layer on random input,
over stride/padding/dilation variants, and the traced rewritten graph is checked to hold no
3-D op (no value of rank 5 except the input's move to time-as-batch and back).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from firmware_export.rewrite_3d import apply_rewrite_3d, rewrite_time_as_batch
from tinyprune.errors import UnsupportedOpError

SHAPE = (1, 3, 8, 10, 12)


def _randomize_bn_(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    return model.eval()


def _rank5_values(module: nn.Module, x: torch.Tensor) -> list[str]:
    """Kinds of traced ops on the input's data (not on weights) that produce rank-5 values."""
    graph = torch.jit.trace(module, x, check_trace=False).graph
    data = {v.debugName() for v in list(graph.inputs())[1:]}  # the clip (input 0 is self)
    kinds = []
    for node in graph.nodes():
        if not any(i.debugName() in data for i in node.inputs()):
            continue
        for out in node.outputs():
            data.add(out.debugName())
            t = out.type()
            if isinstance(t, torch._C.TensorType) and t.dim() == 5:
                kinds.append(node.kind())
    return kinds


def _check(model: nn.Module, shape: tuple[int, ...] = SHAPE) -> list[str]:
    torch.manual_seed(1)
    model = _randomize_bn_(model)
    x = torch.randn(shape)
    rewritten = rewrite_time_as_batch(model, x)
    assert rewritten is not None
    assert rewritten.kept == []
    with torch.no_grad():
        want, got = model(x), rewritten(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    kinds = _rank5_values(rewritten, x)
    # the clip's move to time-as-batch is permute -> reshape -> permute: one 5-D permute in,
    # and the move back (only for a 5-D output) reshape -> permute
    assert kinds.count("aten::permute") + kinds.count("aten::reshape") <= 3, kinds
    assert not [k for k in kinds if k not in ("aten::permute", "aten::reshape")], kinds
    return list(rewritten.done)


CONV3D = [
    dict(kernel_size=(3, 3, 3), padding=1),
    dict(kernel_size=(3, 1, 1), padding=(1, 0, 0), stride=(2, 1, 1)),
    dict(kernel_size=(2, 3, 3), stride=(2, 2, 2), padding=(0, 1, 1)),
    dict(kernel_size=(3, 3, 3), dilation=(2, 1, 1), padding=(2, 1, 1)),
    dict(kernel_size=(1, 5, 5), padding=(0, 2, 2), bias=False),
    dict(kernel_size=(3, 3, 3), padding=1, groups=3),
    dict(kernel_size=(5, 1, 1), padding=(1, 0, 0), stride=(3, 1, 1)),
    dict(kernel_size=(3, 5, 1), padding="same"),
    dict(kernel_size=(2, 2, 2), padding="valid"),
]


@pytest.mark.parametrize("form", ["concat", "sum"])
@pytest.mark.parametrize("kw", CONV3D, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_conv3d_with_batchnorm_equals_3d(kw: dict, form: str) -> None:
    model = nn.Sequential(nn.Conv3d(3, 6, **kw), nn.BatchNorm3d(6), nn.ReLU())
    torch.manual_seed(0)
    x = torch.randn(SHAPE)
    rewritten = rewrite_time_as_batch(_randomize_bn_(model), x, form=form)
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), model(x), rtol=1e-5, atol=1e-5)
    assert list(rewritten.done)[1:3] == ["3d-to-2d:batchnorm-folded:1", "3d-to-2d:conv3d:0"]


POOLS = [
    nn.MaxPool3d((1, 2, 2)),
    nn.MaxPool3d(2, stride=2),
    nn.MaxPool3d((3, 3, 3), stride=(2, 1, 2), padding=1),
    nn.AvgPool3d((2, 2, 2)),
    nn.AvgPool3d((3, 3, 3), stride=(2, 2, 2), padding=1),
    nn.AvgPool3d((3, 1, 1), stride=1, padding=(1, 0, 0), count_include_pad=False),
    nn.AdaptiveAvgPool3d((None, 1, 1)),
    nn.AdaptiveAvgPool3d((4, 1, 1)),
    nn.AdaptiveAvgPool3d((2, 5, 6)),
    nn.AdaptiveMaxPool3d((None, 1, 1)),
    nn.AdaptiveMaxPool3d((1, 1, 1)),
]


@pytest.mark.parametrize("pool", POOLS, ids=repr)
def test_pooling_equals_3d(pool: nn.Module) -> None:
    done = _check(nn.Sequential(nn.Conv3d(3, 4, 1), pool))
    assert any(":1" in d and "pool" in d for d in done), done


TRANSPOSED = [
    dict(kernel_size=(4, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0)),
    dict(kernel_size=(3, 3, 3), stride=(2, 1, 1), padding=(1, 1, 1), output_padding=(1, 0, 0)),
    dict(kernel_size=(2, 1, 1), stride=(2, 1, 1)),
    dict(kernel_size=(3, 1, 1), stride=(3, 1, 1), dilation=(1, 1, 1), padding=(0, 0, 0)),
    dict(kernel_size=(3, 3, 1), stride=(1, 1, 1), padding=(1, 1, 0), dilation=(2, 1, 1)),
]


@pytest.mark.parametrize("kw", TRANSPOSED, ids=lambda kw: str(kw))
def test_conv_transpose3d_in_time_equals_3d(kw: dict) -> None:
    model = nn.Sequential(nn.ConvTranspose3d(3, 5, **kw), nn.BatchNorm3d(5), nn.ELU())
    done = _check(model)
    assert "3d-to-2d:conv_transpose3d:0" in done


@pytest.mark.parametrize(
    "up",
    [
        nn.Upsample(scale_factor=(2, 1, 1)),
        nn.Upsample(scale_factor=(2, 2, 2)),
        nn.Upsample(size=(12, 10, 12)),
        nn.Upsample(scale_factor=(2, 1, 1), mode="trilinear"),
        nn.Upsample(scale_factor=(3, 2, 2), mode="trilinear", align_corners=True),
        nn.Upsample(size=(5, 10, 12), mode="trilinear"),
    ],
    ids=repr,
)
def test_upsample_equals_3d(up: nn.Module) -> None:
    done = _check(nn.Sequential(nn.Conv3d(3, 4, 1), up))
    assert any(d.startswith("3d-to-2d:upsample3d") for d in done)


class _Mixed(nn.Module):
    """InstanceNorm3d, torch.diff over time, concat, pad, slices, a Conv1d head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(6, 4, 3, padding=1)
        self.norm = nn.InstanceNorm3d(4, affine=True)
        self.head = nn.Conv1d(4, 2, 5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = torch.diff(x, dim=2, prepend=x[:, :, :1])
        y = self.norm(self.conv(torch.cat([x, d], 1)))
        y = nn.functional.pad(torch.tanh(y), (1, 1, 0, 0, 2, 1))[:, :, 1:-1:2]
        y = y * torch.linspace(0.5, 1.5, 4).reshape(1, 4, 1, 1, 1) + 0.1
        return self.head(y.mean(dim=(3, 4)))


def test_mixed_ops_map_their_axes() -> None:
    done = _check(_Mixed())
    assert "3d-to-2d:instance_norm3d:norm" in done
    assert "3d-to-2d:conv1d-over-time:head" in done
    assert any(d.startswith("3d-to-2d:diff-over-axis") for d in done)


@pytest.mark.parametrize("name", ["test_physnet", "test_deeprppg"])
def test_zoo_nets_equal_after_rewrite_and_name_their_layers(name: str) -> None:
    from tinyprune.models import create_model

    done = _check(create_model(name), (1, 3, 8, 16, 16))
    assert "3d-to-2d:conv3d:conv_block2.0" in done or "3d-to-2d:conv3d:block2.0" in done
    assert all(d.startswith("3d-to-2d:") for d in done)


def test_a_layer_without_exact_form_is_kept_and_named() -> None:
    model = nn.Sequential(nn.Conv3d(3, 4, 1), nn.MaxPool3d(3, stride=2, ceil_mode=True))
    x = torch.randn(SHAPE)
    rewritten = rewrite_time_as_batch(model.eval(), x)
    assert rewritten.kept == [("1", "MaxPool3D", "ceil_mode or dilation in max pooling")]
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), model(x))
    assert apply_rewrite_3d(model, x, "complete") is None  # LiteRT: export as before
    with pytest.raises(UnsupportedOpError, match=r"MaxPool3D \(layer '1'\): ceil_mode") as e:
        apply_rewrite_3d(model, x, "all", "cortex-m7")
    assert e.value.exit_code == 4 and e.value.ops == ("MaxPool3D",)


def test_a_2d_model_is_left_alone() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    assert apply_rewrite_3d(model, torch.randn(1, 3, 8, 8), "all") is None


def test_a_pt2_program_is_rewritten_like_the_module(tmp_path) -> None:  # noqa: ANN001
    from tinyprune.app.sources import load_exported_program
    from tinyprune.models import create_model

    model = _randomize_bn_(create_model("test_physnet"))
    x = torch.randn(1, 3, 8, 16, 16)
    torch.export.save(torch.export.export(model, (x,)), str(tmp_path / "m.pt2"))
    program = load_exported_program(tmp_path / "m.pt2")
    from_module, from_program = rewrite_time_as_batch(model, x), rewrite_time_as_batch(program, x)
    assert list(from_program.done) == list(from_module.done)  # the same layers, by module path
    with torch.no_grad():
        torch.testing.assert_close(from_program(x), model(x), rtol=1e-5, atol=1e-5)
