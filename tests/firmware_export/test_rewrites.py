"""Each export-friendly rewrite computes exactly what the original computes (in float)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from firmware_export.rewrite import (
    Pool3dAs2d,
    Pool3dAsSlices,
    rewrite_adaptive_pool3d_,
    rewrite_pool3d_,
)

POOLS = [
    nn.MaxPool3d((1, 2, 2)),
    nn.MaxPool3d(2),
    nn.MaxPool3d((3, 3, 3), stride=(2, 1, 2), padding=1),
    nn.MaxPool3d((3, 2, 3), stride=(2, 1, 2)),
    nn.AvgPool3d((2, 2, 2)),
    nn.AvgPool3d(3, stride=2, padding=1),
    nn.AvgPool3d((2, 3, 2), stride=(1, 2, 2)),
    nn.AvgPool3d(3, stride=2, padding=1, count_include_pad=False),
]


def _padding(pool: nn.Module) -> tuple[int, ...]:
    p = pool.padding
    return (p, p, p) if isinstance(p, int) else tuple(p)


@pytest.mark.parametrize("pool", POOLS, ids=repr)
def test_pool3d_as_2d_is_exact(pool: nn.Module) -> None:
    x = torch.randn(2, 3, 7, 9, 10)
    model = nn.Sequential(pool)
    expected = model(x)
    assert rewrite_pool3d_(model) == ["0"]
    assert isinstance(model[0], Pool3dAs2d if any(_padding(pool)) else Pool3dAsSlices)
    torch.testing.assert_close(model(x), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size", [(8, 1, 1), (4, 3, 2), (None, 1, 1)], ids=str)
def test_adaptive_avgpool3d_rewrite_is_exact(size: tuple[int | None, int, int]) -> None:
    x = torch.randn(1, 4, 8, 6, 6)
    model = nn.Sequential(nn.AdaptiveAvgPool3d(size))
    expected = model(x)
    assert rewrite_adaptive_pool3d_(model, x) == ["0"]
    torch.testing.assert_close(model(x), expected, rtol=1e-6, atol=1e-6)


def test_ceil_mode_pool_is_left_alone() -> None:
    model = nn.Sequential(nn.MaxPool3d(2, ceil_mode=True))
    assert rewrite_pool3d_(model) == []


# --- ONNX-level rewrites, checked with ONNX Runtime -----------------------------------------


def _onnx(model: nn.Module, x: torch.Tensor):  # noqa: ANN202
    onnx = pytest.importorskip("onnx")
    from firmware_export.export_onnx import simplify

    buf = io.BytesIO()
    torch.onnx.export(
        model.eval(),
        (x[:1],),
        buf,
        opset_version=17,
        dynamo=False,
        input_names=["input"],
        output_names=["output"],
    )
    return simplify(onnx.load_from_string(buf.getvalue()))


def _run(proto, x: torch.Tensor) -> np.ndarray:  # noqa: ANN001
    from firmware_export.export_onnx import onnxruntime_forward

    return onnxruntime_forward(proto.SerializeToString(), x.numpy())


def _ops(proto) -> list[str]:  # noqa: ANN001
    return [n.op_type for n in proto.graph.node]


@pytest.mark.tf
@pytest.mark.parametrize(
    "act", [nn.ReLU(), nn.ReLU6(), nn.Sigmoid()], ids=["relu", "relu6", "sigmoid"]
)
def test_maxpool_after_nonnegative_gets_zero_pad(act: nn.Module) -> None:
    from firmware_export.rewrite_onnx import rewrite_maxpool_padding

    x = torch.randn(3, 4, 9, 9)
    proto = _onnx(nn.Sequential(nn.Conv2d(4, 4, 3), act, nn.MaxPool2d(3, 2, 1)), x)
    before = _run(proto, x)
    assert len(rewrite_maxpool_padding(proto)) == 1
    assert "Pad" in _ops(proto)
    np.testing.assert_array_equal(_run(proto, x), before)


@pytest.mark.tf
def test_maxpool_after_signed_input_is_not_rewritten() -> None:
    from firmware_export.rewrite_onnx import rewrite_maxpool_padding

    proto = _onnx(nn.Sequential(nn.Conv2d(4, 4, 3), nn.MaxPool2d(3, 2, 1)), torch.randn(1, 4, 9, 9))
    assert rewrite_maxpool_padding(proto) == []


class _Shuffle(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.view(b, 3, c // 3, h, w).transpose(1, 2).reshape(b, c, h, w) * 2


@pytest.mark.tf
def test_channel_shuffle_becomes_a_gather() -> None:
    from firmware_export.rewrite_onnx import rewrite_channel_shuffle

    x = torch.randn(1, 12, 5, 4)
    proto = _onnx(_Shuffle(), x)
    before = _run(proto, x)
    assert len(rewrite_channel_shuffle(proto)) == 1
    assert "Transpose" not in _ops(proto) and "Gather" in _ops(proto)
    np.testing.assert_array_equal(_run(proto, x), before)


@pytest.mark.tf
def test_hardsigmoid_becomes_relu6_form() -> None:
    from firmware_export.rewrite_onnx import rewrite_hardsigmoid

    x = torch.linspace(-8, 8, 4 * 5 * 5).reshape(1, 4, 5, 5)
    proto = _onnx(nn.Sequential(nn.Conv2d(4, 4, 1), nn.Hardsigmoid()), x)
    before = _run(proto, x)
    assert len(rewrite_hardsigmoid(proto)) == 1
    assert "HardSigmoid" not in _ops(proto)
    np.testing.assert_allclose(_run(proto, x), before, rtol=0, atol=1e-6)


def _upsample3d(groups: int = 1) -> nn.Module:
    """PhysNet's temporal upsampling block; in eval mode the export folds BN into the bias."""
    torch.manual_seed(0)
    block = nn.Sequential(
        nn.ConvTranspose3d(4, 4, (4, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0), groups=groups),
        nn.BatchNorm3d(4),
        nn.ELU(),
    )
    block[1].running_mean.normal_()
    block[1].bias.data.normal_()
    return block


@pytest.mark.tf
@pytest.mark.parametrize("groups", [1, 2])
def test_conv_transpose3d_bias_becomes_an_add(groups: int) -> None:
    import onnx

    from firmware_export.rewrite_onnx import rewrite_conv_transpose3d_bias

    x = torch.randn(2, 4, 4, 3, 5)
    proto = _onnx(_upsample3d(groups), x)
    before = _run(proto, x)
    assert len(rewrite_conv_transpose3d_bias(proto)) == 1
    conv = next(n for n in proto.graph.node if n.op_type == "ConvTranspose")
    assert len(conv.input) == 2  # onnx2tf 1.28 drops a 3-D ConvTranspose bias when group == 1
    assert _ops(proto).index("Add") == _ops(proto).index("ConvTranspose") + 1
    onnx.checker.check_model(proto)
    np.testing.assert_allclose(_run(proto, x), before, rtol=0, atol=1e-6)
    assert np.abs(before).max() > 0.1  # a dropped bias would show: the data is not all ~0


@pytest.mark.tf
def test_conv_transpose_without_bias_or_2d_is_left_alone() -> None:
    from firmware_export.rewrite_onnx import rewrite_conv_transpose3d_bias

    no_bias = nn.Sequential(
        nn.ConvTranspose3d(4, 4, (4, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0), bias=False)
    )
    assert rewrite_conv_transpose3d_bias(_onnx(no_bias, torch.randn(1, 4, 4, 3, 3))) == []
    two_d = nn.Sequential(nn.ConvTranspose2d(4, 4, (4, 1), stride=(2, 1), padding=(1, 0)))
    assert rewrite_conv_transpose3d_bias(_onnx(two_d, torch.randn(1, 4, 4, 3))) == []


@pytest.mark.tf
def test_rewrite_onnx_reports_conv_transpose3d_bias() -> None:
    from firmware_export.rewrite_onnx import rewrite_onnx

    x = torch.randn(1, 4, 4, 3, 3)
    proto = _onnx(_upsample3d(), x)
    before = _run(proto, x)
    done = [d.split(":")[0] for d in rewrite_onnx(proto)]
    assert done == ["elu-tanh-div", "convtranspose3d-bias-add"]  # PhysNet's upsampler: + ELU
    np.testing.assert_allclose(_run(proto, x), before, rtol=0, atol=1e-6)


class _CatThenPool3d(nn.Module):
    """3-D pooling in a traced graph beside nodes whose first argument is a list (cat)."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool3d((1, 2, 2))
        self.avg = nn.AvgPool3d((2, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.avg(self.pool(torch.cat([x, 2 * x], 1)))


def test_3d_pooling_inside_a_traced_program_is_rewritten() -> None:
    from firmware_export.rewrite import rewrite_graph_pool3d_

    x = torch.randn(1, 2, 4, 8, 8)
    gm = torch.export.export(_CatThenPool3d().eval(), (x,)).module()
    want = gm(x)
    assert rewrite_graph_pool3d_(gm) == ["pool", "avg"]
    targets = {n.target for n in gm.graph.nodes if n.op == "call_function"}
    assert not targets & {torch.ops.aten.max_pool3d.default, torch.ops.aten.avg_pool3d.default}
    torch.testing.assert_close(gm(x), want)
