"""The rewrites for the field's rPPG nets compute what the original computes (float, ONNX
Runtime), for modules and ``.pt2`` programs, and the ops they emit are TFLM builtins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from firmware_export.export_onnx import export_onnx, onnxruntime_forward
from firmware_export.rewrite_onnx import rewrite_onnx
from firmware_export.rewrite_onnx_ops import ERF_MAX_ERROR


class PublishedShift(nn.Module):
    """TSM as TS-CAN publishes it: zeros_like + three in-place slice assignments on 5-D."""

    def __init__(self, frames: int = 4, fold_div: int = 3) -> None:
        super().__init__()
        self.frames, self.fold_div = frames, fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nt, c, h, w = x.shape
        x = x.view(nt // self.frames, self.frames, c, h, w)
        fold = c // self.fold_div
        out = torch.zeros_like(x)
        out[:, :-1, :fold] = x[:, 1:, :fold]
        out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]
        out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
        return out.view(nt, c, h, w)


class FramesShift(nn.Module):
    """A clip ``(1, C, T*H, W)`` -> frames -> published TSM -> back (batch-1 export)."""

    def __init__(self, frames: int = 4) -> None:
        super().__init__()
        self.frames, self.shift = frames, PublishedShift(frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, th, w = x.shape
        f = x.reshape(b, c, self.frames, th // self.frames, w).transpose(1, 2)
        f = f.reshape(b * self.frames, c, th // self.frames, w)
        return self.shift(f).sum(0, keepdim=True)


class OverwriteNonZero(nn.Module):
    """Slice assignment into a non-constant tensor, two boxes on two axes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 2.0
        y[:, 1:3, 2:5] = x[:, :2, :3] - 1.0
        y[:, :, :, -2:] = x[:, :, :, :2]
        return y


class ScatterColumns(nn.Module):
    """Assignment at scattered (non-box) indices: no slice form, left as ScatterND."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.zeros_like(x)
        y[:, [0, 2]] = x[:, :2]
        return y + x


def _export(model: nn.Module, sample: np.ndarray, tmp_path: Path) -> tuple[list[str], object]:
    import onnx

    path = tmp_path / "m.onnx"
    rewrites = export_onnx(model, sample, path)
    return rewrites, onnx.load(str(path))


def _ops(proto: object) -> list[str]:
    return [n.op_type for n in proto.graph.node]  # type: ignore[attr-defined]


def _onnx_vs_torch(model: nn.Module, proto: object, samples: np.ndarray) -> float:
    with torch.no_grad():
        expected = np.stack([model(torch.from_numpy(s[None]))[0].numpy() for s in samples])
    got = onnxruntime_forward(proto.SerializeToString(), samples)  # type: ignore[attr-defined]
    return float(np.max(np.abs(got - expected)))


@pytest.mark.parametrize(
    ("model", "shape"),
    [(FramesShift(), (6, 16, 5)), (OverwriteNonZero(), (4, 6, 7))],
    ids=["tsm-published", "overwrite-non-zero"],
)
def test_slice_assignment_becomes_slices_pads_concat(
    model: nn.Module, shape: tuple[int, ...], tmp_path: Path
) -> None:
    samples = np.random.default_rng(0).standard_normal((3, *shape)).astype(np.float32)
    rewrites, proto = _export(model, samples[0], tmp_path)
    assert any(r.startswith("scatternd-slice-concat:") for r in rewrites)
    ops = _ops(proto)
    assert "ScatterND" not in ops and "Concat" in ops
    assert _onnx_vs_torch(model, proto, samples) <= 1e-6  # copies only: exact


def test_temporal_shift_is_a_pad_per_fold(tmp_path: Path) -> None:
    sample = np.random.default_rng(1).standard_normal((6, 16, 5)).astype(np.float32)
    _, proto = _export(FramesShift(), sample, tmp_path)
    ops = _ops(proto)
    assert ops.count("Pad") == 2  # one zero pad per shifted fold, then one concat of the folds
    assert not any(n.op_type == "Constant" for n in proto.graph.node)  # type: ignore[attr-defined]


def test_scatter_at_non_box_indices_is_left_alone(tmp_path: Path) -> None:
    sample = np.random.default_rng(2).standard_normal((4, 3, 3)).astype(np.float32)
    rewrites, proto = _export(ScatterColumns(), sample, tmp_path)
    assert "ScatterND" in _ops(proto)
    assert not any(r.startswith("scatternd-slice-concat:") for r in rewrites)
    assert _onnx_vs_torch(ScatterColumns(), proto, sample[None]) <= 1e-6


class Diff(nn.Module):
    def __init__(self, n: int, dim: int, ends: bool) -> None:
        super().__init__()
        self.n, self.dim, self.ends = n, dim, ends

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.ends:
            return torch.diff(x, n=self.n, dim=self.dim)
        edge = x.narrow(self.dim, 0, 1)
        return torch.diff(x, n=self.n, dim=self.dim, prepend=edge * 0.5, append=edge)


@pytest.mark.parametrize(
    ("n", "dim", "ends"), [(1, 1, False), (2, -1, False), (1, 2, True), (3, -2, True)]
)
def test_diff_exports_as_slice_difference(n: int, dim: int, ends: bool, tmp_path: Path) -> None:
    model = Diff(n, dim, ends)
    samples = np.random.default_rng(3).standard_normal((2, 4, 6, 5)).astype(np.float32)
    rewrites, proto = _export(model, samples[0], tmp_path)
    axis = dim % 4
    assert f"diff-slice-sub:n={n},dim={axis}" in rewrites
    assert "Sub" in _ops(proto)
    assert _onnx_vs_torch(model, proto, samples) <= 1e-5


class ShiftDiffNet(nn.Module):
    """In-place shift, frame difference and a conv, as a ``.pt2`` program would hold them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.reshape(4, 6, 8, 8)
        out = torch.zeros_like(f)
        out[:-1, :2] = f[1:, :2]
        out[1:, 2:4] = f[:-1, 2:4]
        out[:, 4:] = f[:, 4:]
        d = torch.diff(out, dim=0, append=out[-1:])
        return self.conv(d).mean(0, keepdim=True)


def _pt2(model: nn.Module, x: torch.Tensor, tmp_path: Path) -> nn.Module:
    from tinyprune.app.sources import load_exported_program

    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model.eval(), (x,)), str(path))
    return load_exported_program(path)


def test_pt2_program_with_slice_assignment_and_diff_exports_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ShiftDiffNet()
    samples = np.random.default_rng(4).standard_normal((3, 24, 8, 8)).astype(np.float32)
    program = _pt2(model, torch.from_numpy(samples[:1]), tmp_path)
    rewrites, proto = _export(program, samples[0], tmp_path)
    assert "functionalized:graph_module" in rewrites
    assert "diff-slice-sub:n=1,dim=0" in rewrites
    ops = _ops(proto)
    assert {"ScatterND", "Constant"}.isdisjoint(ops) and "Conv" in ops
    assert _onnx_vs_torch(model, proto, samples) <= 1e-5  # the input is not dropped


class InplaceReluBN(nn.Module):
    """conv -> BatchNorm -> in-place ReLU (ds_cnn, physnet_2p1d): the in-place op makes the export
    re-trace the .pt2 graph functionally, where BatchNorm becomes
    ``aten::_native_batch_norm_legit_no_training``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu_(self.bn(self.conv(x))))


def test_pt2_program_with_inplace_op_and_batchnorm_exports_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = InplaceReluBN().eval()
    with torch.no_grad():  # BN statistics that are not the identity
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
        model.bn.weight.uniform_(0.5, 2)
        model.bn.bias.uniform_(-1, 1)
    samples = np.random.default_rng(5).standard_normal((3, 3, 8, 8)).astype(np.float32)
    program = _pt2(model, torch.from_numpy(samples[:1]), tmp_path)
    rewrites, proto = _export(program, samples[0], tmp_path)
    assert "functionalized:graph_module" in rewrites
    assert _onnx_vs_torch(model, proto, samples) <= 1e-5  # BatchNorm applied (folded or not)


def _erf_graph() -> object:
    from onnx import TensorProto, helper

    node = helper.make_node("Erf", ["x"], ["y"], name="erf")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4001])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4001])
    graph = helper.make_graph([node], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_erf_becomes_tanh_within_its_bound() -> None:
    from scipy.special import erf

    proto = _erf_graph()
    assert rewrite_onnx(proto) == ["erf-tanh:erf"]
    assert "Erf" not in _ops(proto) and "Tanh" in _ops(proto)
    z = np.linspace(-5, 5, 4001, dtype=np.float32)
    got = onnxruntime_forward(proto.SerializeToString(), z[None])[0]  # type: ignore[attr-defined]
    err = np.abs(got - erf(z.astype(np.float64)))
    assert 1e-5 < err.max() <= ERF_MAX_ERROR  # an approximation, and a close one


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_exports_with_tflm_ops(approximate: str, tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.GELU(approximate=approximate))
    samples = (3 * np.random.default_rng(5).standard_normal((2, 3, 6, 6))).astype(np.float32)
    rewrites, proto = _export(model, samples[0], tmp_path)
    assert {"Erf", "Pow"}.isdisjoint(_ops(proto))
    assert ("erf-tanh:/1/Erf" in rewrites) == (approximate == "none")
    assert _onnx_vs_torch(model, proto, samples) <= (5e-4 if approximate == "none" else 1e-5)


class TokenBlock(nn.Module):
    """Conv patch embedding, InstanceNorm, LayerNorm, softmax attention and a GELU MLP."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, stride=4)
        self.inorm = nn.InstanceNorm2d(dim)
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, 2)
        self.scale = dim**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.inorm(self.embed(x)).flatten(2).transpose(1, 2)
        h = self.ln1(t)
        attn = torch.softmax(self.q(h) @ self.k(h).transpose(1, 2) * self.scale, dim=-1)
        t = t + attn @ self.v(h)
        t = t + self.mlp(self.ln2(t))
        return self.head(t.mean(1))


@pytest.mark.tf
def test_token_block_exports_to_tflm_in_int8(tmp_path: Path) -> None:
    from firmware_export import ExportOptions, export
    from firmware_export.tflm import tflm_builtin_ops

    torch.manual_seed(0)
    calib = np.random.default_rng(6).standard_normal((24, 3, 16, 16)).astype(np.float32)
    result = export(
        TokenBlock().eval(),
        calib,
        target="cortex-m7",
        out_dir=tmp_path / "run",
        options=ExportOptions(calib_cap=24, verify_samples=12),
    )
    report = result.report
    assert report["float_ops"] == []
    assert set(report["ops"]) <= tflm_builtin_ops()
    assert {"BATCH_MATMUL", "SOFTMAX", "TANH", "RSQRT"} <= set(report["ops"])
    assert "erf-tanh:/mlp/mlp.1/Erf" in report["rewrites"]
    verify = report["verify"]
    assert verify["tflm_vs_litert_ref"]["passed"] and verify["int8_vs_float"]["cos"] > 0.98
