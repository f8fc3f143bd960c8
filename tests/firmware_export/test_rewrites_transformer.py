"""Transformer and activation rewrites: equal in float to what they replace, int8 on TFLM."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from firmware_export.export_onnx import onnxruntime_forward, prepare_module
from firmware_export.rewrite_attention import ExplicitHeadsAttention, rewrite_attention_
from firmware_export.rewrite_onnx import rewrite_onnx


def _masks(kind: str, n: int, s: int) -> dict[str, object]:
    if kind == "float-mask":
        return {"attn_mask": torch.randn(n, s)}
    if kind == "bool-mask":
        return {"attn_mask": torch.rand(n, s) > 0.7}
    if kind == "padding":
        pad = torch.zeros(2, s, dtype=torch.bool)
        pad[1, -2:] = True
        return {"key_padding_mask": pad, "average_attn_weights": False}
    if kind == "causal":
        return {"attn_mask": torch.ones(n, s, dtype=torch.bool).triu(1), "is_causal": True}
    return {"need_weights": kind != "no-weights"}


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kdim", [None, 12])
@pytest.mark.parametrize(
    "kind", ["plain", "no-weights", "float-mask", "bool-mask", "padding", "causal"]
)
def test_explicit_heads_equal_multihead_attention(
    batch_first: bool, kdim: int | None, kind: str
) -> None:
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(16, 4, batch_first=batch_first, kdim=kdim, vdim=kdim).eval()
    new = ExplicitHeadsAttention(ref).eval()
    n, s = 5, 5 if kind == "causal" else 7
    q = torch.randn(2, n, 16) if batch_first else torch.randn(n, 2, 16)
    kv = torch.randn(2, s, kdim or 16) if batch_first else torch.randn(s, 2, kdim or 16)
    kw = _masks(kind, n, s)
    with torch.no_grad():
        (a, wa), (b, wb) = ref(q, kv, kv, **kw), new(q, kv, kv, **kw)
    assert torch.allclose(a, b, atol=1e-6)
    assert (wa is None) == (wb is None)
    if wa is not None:
        assert torch.allclose(wa, wb, atol=1e-6)


def test_attention_rewrite_leaves_what_it_cannot_express() -> None:
    model = nn.ModuleDict(
        {
            "plain": nn.MultiheadAttention(8, 2),
            "bias_kv": nn.MultiheadAttention(8, 2, add_bias_kv=True),
            "zero_attn": nn.MultiheadAttention(8, 2, add_zero_attn=True),
            "encoder": nn.TransformerEncoderLayer(8, 2, 16),
        }
    )
    assert rewrite_attention_(model) == ["mha-explicit-heads:plain"]
    assert isinstance(model["plain"], ExplicitHeadsAttention)
    assert isinstance(model["bias_kv"], nn.MultiheadAttention)
    assert isinstance(model["encoder"].self_attn, nn.MultiheadAttention)


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_elu_becomes_int8_ops_exactly(alpha: float) -> None:
    """(alpha > 1 is left as ELU: the MAXIMUM form needs alpha (e^x - 1) >= x for x <= 0.)"""
    import onnx

    buf = io.BytesIO()
    net = nn.ELU(alpha).eval()
    torch.onnx.export(
        net, (torch.zeros(1, 2001),), buf, opset_version=17, dynamo=False, input_names=["x"]
    )
    proto = onnx.load_from_string(buf.getvalue())
    assert rewrite_onnx(proto) == ["elu-tanh-div:/Elu"]
    ops = {n.op_type for n in proto.graph.node}
    assert "Elu" not in ops and {"Tanh", "Sigmoid", "Div", "Min", "Max"} <= ops
    z = np.linspace(-30, 8, 2001, dtype=np.float32)
    got = onnxruntime_forward(proto.SerializeToString(), z[None])[0]
    assert np.abs(got - net(torch.from_numpy(z)).numpy()).max() <= 1e-6


class Tokens(nn.Module):
    """Patch embedding -> tokens -> ``nn.MultiheadAttention`` (the module) -> head."""

    input_shape = (3, 16, 16)

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, stride=4)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        a, _ = self.attn(t, t, t, need_weights=False)
        return self.head(torch.tanh(t + a)).mean(1)


def test_module_preparation_rewrites_attention() -> None:
    torch.manual_seed(0)
    model = Tokens().eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    prepared, done = prepare_module(model, x[0])
    assert done == ["mha-explicit-heads:attn"]
    with torch.no_grad():
        assert torch.allclose(model(torch.from_numpy(x)), prepared(torch.from_numpy(x)), atol=1e-6)


@pytest.mark.tf
def test_multihead_attention_module_exports_to_tflm_int8(tmp_path: Path) -> None:
    """Without the rewrite onnx2tf changes what nn.MultiheadAttention computes (exit 5)."""
    from firmware_export import ExportOptions, export

    torch.manual_seed(0)
    calib = np.random.default_rng(1).standard_normal((16, 3, 16, 16)).astype(np.float32)
    report = export(
        Tokens().eval(),
        calib,
        target="cortex-m7",
        out_dir=tmp_path / "run",
        options=ExportOptions(calib_cap=16, verify_samples=8),
    ).report
    assert "mha-explicit-heads:attn" in report["rewrites"]
    assert report["float_ops"] == [] and {"BATCH_MATMUL", "SOFTMAX"} <= set(report["ops"])
    verify = report["verify"]
    assert verify["onnx_vs_tflite_float"]["passed"] and verify["tflm_vs_litert_ref"]["passed"]
    assert verify["int8_vs_float"]["cos"] > 0.99
    assert any(row["torch_layer"].startswith("attn") for row in report["layers"])


class SumMasked(nn.Module):
    """The published attention-mask normalisation: ``x / sum_HW(x) * H * W / 2``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(x)
        s = torch.sum(torch.sum(g, dim=2, keepdim=True), dim=3, keepdim=True)
        return x * (g / s * g.shape[2] * g.shape[3] * 0.5) + x.sum(1, keepdim=True)


def test_sum_becomes_mean_times_count(tmp_path: Path) -> None:
    import onnx

    from firmware_export.export_onnx import export_onnx

    x = np.random.default_rng(2).standard_normal((3, 4, 6, 5)).astype(np.float32)
    rewrites = export_onnx(SumMasked(), x[0], tmp_path / "m.onnx")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert sum(r.startswith("sum-as-mean-times-count:") for r in rewrites) == 2  # HW and C
    assert "ReduceSum" not in {n.op_type for n in proto.graph.node}
    got = onnxruntime_forward(proto.SerializeToString(), x)
    with torch.no_grad():
        ref = SumMasked()(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() <= 1e-5
