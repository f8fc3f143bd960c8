"""Each export-friendly rewrite computes exactly what the original computes (in float)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from firmware_export.rewrite import Pool3dAs2d, Pool3dAsSlices, rewrite_adaptive_pool3d_, rewrite_pool3d_

POOLS = [
    nn.MaxPool3d((1, 2, 2)), nn.MaxPool3d(2), nn.MaxPool3d((3, 3, 3), stride=(2, 1, 2), padding=1),
    nn.MaxPool3d((3, 2, 3), stride=(2, 1, 2)), nn.AvgPool3d((2, 2, 2)), nn.AvgPool3d(3, stride=2, padding=1),
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


@pytest.mark.parametrize("size", [(8, 1, 1), (4, 3, 2)], ids=str)
def test_adaptive_avgpool3d_rewrite_is_exact(size: tuple[int, int, int]) -> None:
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
    torch.onnx.export(model.eval(), (x[:1],), buf, opset_version=17, dynamo=False,
                      input_names=["input"], output_names=["output"])
    return simplify(onnx.load_from_string(buf.getvalue()))


def _run(proto, x: torch.Tensor) -> np.ndarray:  # noqa: ANN001
    from firmware_export.export_onnx import onnxruntime_forward

    return onnxruntime_forward(proto.SerializeToString(), x.numpy())


def _ops(proto) -> list[str]:  # noqa: ANN001
    return [n.op_type for n in proto.graph.node]


@pytest.mark.tf
@pytest.mark.parametrize("act", [nn.ReLU(), nn.ReLU6(), nn.Sigmoid()], ids=["relu", "relu6", "sigmoid"])
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
