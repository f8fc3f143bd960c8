"""Rank-5 views over a unit axis are computed in rank 4 (TFLM's limit); 3-D nets are left alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rppg_field_nets import SliceShift, frames_of
from torch import nn

from firmware_export.export_onnx import export_onnx, onnxruntime_forward


class PublishedTsm(nn.Module):
    """Conv -> TS-CAN's shift (a 5-D ``view(1, T, C, H, W)`` with slice assignment) -> conv."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 2, 1)
        self.shift = SliceShift(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(self.shift(self.a(frames_of(x, 4))))  # 4 frames stacked in x
        return y.flatten(0, 1).unsqueeze(0)  # (1, frames * channels, H, W)


class Pool3d(nn.Module):
    """A 3-D net: its 5-D slices (the pooling rewrite) feed 5-D ops and must stay 5-D."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.pool = nn.Conv3d(3, 4, 3, padding=1), nn.MaxPool3d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.conv(x)))


def _ranks(path: Path) -> list[int]:
    import onnx

    proto = onnx.load(str(path))
    del proto.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    return [len(v.type.tensor_type.shape.dim) for v in (*inferred.value_info, *inferred.output)]


def _check_equal(model: nn.Module, x: np.ndarray, path: Path) -> None:
    import onnx

    got = onnxruntime_forward(onnx.load(str(path)).SerializeToString(), x)
    with torch.no_grad():
        ref = np.concatenate([model(torch.from_numpy(s[None])).numpy() for s in x])
    assert np.abs(got - ref).max() <= 1e-5


def test_published_temporal_shift_leaves_no_rank5_tensor(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = PublishedTsm().eval()
    x = np.random.default_rng(0).standard_normal((3, 3, 4 * 8, 8)).astype(np.float32)
    rewrites = export_onnx(model, x[0], tmp_path / "m.onnx")
    assert any(r.startswith("rank5-unit-axis-as-rank4:") for r in rewrites)
    assert max(_ranks(tmp_path / "m.onnx")) == 4
    _check_equal(model, x, tmp_path / "m.onnx")


def test_three_d_net_keeps_its_rank5_slices(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Pool3d().eval()
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 6, 6)).astype(np.float32)
    rewrites = export_onnx(model, x[0], tmp_path / "m.onnx")
    assert not any(r.startswith("rank5-unit-axis-as-rank4:") for r in rewrites)
    assert 5 in _ranks(tmp_path / "m.onnx")
    _check_equal(model, x, tmp_path / "m.onnx")
