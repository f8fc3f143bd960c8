"""LiteRT-only rewrites: average pools and broadcast divisions become ops XNNPACK runs in int8,
computing what the original computes (float, ONNX Runtime); TFLM targets keep the originals."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from firmware_export.export_onnx import export_onnx, onnxruntime_forward
from firmware_export.rewrite_onnx_litert import rewrite_for_litert


class PoolsAndMask(nn.Module):
    """DeepPhys' attention-mask normalisation, pools of several shapes, and divisions the
    rewrite must leave alone (same shape, constant divisor, padded pool)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.att = nn.Conv2d(6, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.conv(x))
        g = torch.sigmoid(self.att(y))
        y = y * (g / (2.0 * g.mean(dim=(2, 3), keepdim=True)))  # broadcast divisor
        a = nn.functional.avg_pool2d(y, 2)
        b = nn.functional.avg_pool2d(y, 3, stride=2)
        c = nn.functional.avg_pool2d(y, 3, stride=1, padding=1, count_include_pad=False)
        same = a / (torch.sigmoid(a) + 1.0)  # same shape: not a normaliser
        return torch.cat([t.flatten(1) for t in (same, b, c, a / 3.0)], dim=1)


def _onnx(model: nn.Module, sample: np.ndarray, tmp: Path):
    import onnx

    path = tmp / "m.onnx"
    export_onnx(model.eval(), sample, path)
    return onnx.load(path)


def test_rewrites_compute_the_same_in_float(tmp_path: Path) -> None:
    torch.manual_seed(0)
    samples = np.random.default_rng(0).standard_normal((4, 3, 12, 12)).astype(np.float32)
    proto = _onnx(PoolsAndMask(), samples[0], tmp_path)
    rewritten = copy.deepcopy(proto)
    done = rewrite_for_litert(rewritten)
    assert sum(d.startswith("avgpool-depthwise-conv:") for d in done) == 2, done
    assert sum(d.startswith("div-as-mul-reciprocal:") for d in done) == 1, done
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count("AveragePool") == 1  # the padded one (count_include_pad=0) stays
    want = onnxruntime_forward(proto.SerializeToString(), samples)
    got = onnxruntime_forward(rewritten.SerializeToString(), samples)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_wrong_rewrite_would_be_seen(tmp_path: Path) -> None:
    """The float check above can fail: a depthwise weight off by 1 % changes the output."""
    samples = np.random.default_rng(1).standard_normal((2, 3, 12, 12)).astype(np.float32)
    proto = _onnx(PoolsAndMask(), samples[0], tmp_path)
    rewritten = copy.deepcopy(proto)
    rewrite_for_litert(rewritten)
    from onnx import numpy_helper

    for i, init in enumerate(rewritten.graph.initializer):
        if init.name.endswith("_mean_weight"):
            w = numpy_helper.to_array(init) * 1.01
            rewritten.graph.initializer[i].CopyFrom(numpy_helper.from_array(w, init.name))
    want = onnxruntime_forward(proto.SerializeToString(), samples)
    got = onnxruntime_forward(rewritten.SerializeToString(), samples)
    assert not np.allclose(got, want, rtol=1e-5, atol=1e-6)


def _ops(folder: Path) -> list[tuple[str, int]]:
    """(op name, elements of its first output) of an export's int8 model."""
    from firmware_export.tflite_model import parse_tflite

    m = parse_tflite((folder / "model_int8.tflite").read_bytes())
    return [(op.name, int(np.prod(m.tensors[op.outputs[0]].shape))) for op in m.ops]


@pytest.mark.tf
def test_a_litert_export_leaves_xnnpack_no_pool_and_only_tiny_divisions(tmp_path: Path) -> None:
    import json

    from firmware_export import ExportOptions, export
    from tinyprune.models import create_model

    torch.manual_seed(0)
    model = create_model("test_tscan").eval()
    shape = tuple(model.input_shape)
    calib = np.random.default_rng(0).standard_normal((16, *shape)).astype(np.float32)
    options = ExportOptions(verify_samples=4)
    pi = export(model, calib, target="rpi4", out_dir=tmp_path / "pi", options=options)
    mcu = export(model, calib, target="cortex-m7", out_dir=tmp_path / "m7", options=options)
    pi_ops, mcu_ops = _ops(pi.out_dir), _ops(mcu.out_dir)
    assert not [o for o in pi_ops if o[0] == "AVERAGE_POOL_2D"]
    big_div = [n for op, n in pi_ops if op == "DIV" and n > 64]
    assert not big_div, pi_ops
    assert [o for o in mcu_ops if o[0] == "AVERAGE_POOL_2D"]  # TFLM keeps its pools
    assert [n for op, n in mcu_ops if op == "DIV" and n > 64]
    rewrites = json.loads((pi.out_dir / "report.json").read_text())["rewrites"]
    assert any(r.startswith("avgpool-depthwise-conv:") for r in rewrites)
    assert not any(
        r.startswith(("avgpool-depthwise-conv:", "div-as-mul-reciprocal:"))
        for r in json.loads((mcu.out_dir / "report.json").read_text())["rewrites"]
    )
    assert pi.report["float_ops"] == []


@pytest.mark.tf
def test_a_litert_export_runs_narrow_convolutions_on_pixel_blocks(tmp_path: Path) -> None:
    """rpi4: the full-resolution convolutions of a TS-CAN run on 2x2 blocks (no SPACE_TO_DEPTH
    op; the move back as a transpose); ``model.onnx`` keeps them as they are (ONNX Runtime runs
    it); ``space_to_depth="off"`` exports them unchanged; both int8 models agree."""
    import onnx

    from firmware_export import ExportOptions, export
    from tinyprune.models import create_model

    torch.manual_seed(0)
    model = create_model("test_tscan").eval()
    calib = np.random.default_rng(0).standard_normal((16, *model.input_shape)).astype(np.float32)
    blocks = export(
        model,
        calib,
        target="rpi4",
        out_dir=tmp_path / "on",
        options=ExportOptions(verify_samples=4),
    )
    plain = export(
        model,
        calib,
        target="rpi4",
        out_dir=tmp_path / "off",
        options=ExportOptions(verify_samples=4, space_to_depth="off"),
    )
    rewritten = [r for r in blocks.report["rewrites"] if r.startswith("conv-space-to-depth:")]
    assert len(rewritten) >= 2, blocks.report["rewrites"]
    assert not any(r.startswith("conv-space-to-depth:") for r in plain.report["rewrites"])
    # DEPTH_TO_SPACE ran as RESHAPE -> TRANSPOSE -> RESHAPE: the reference kernels run it all
    names, plain_names = ([op for op, _ in _ops(r.out_dir)] for r in (blocks, plain))
    assert not {"DEPTH_TO_SPACE", "SPACE_TO_DEPTH"} & set(names)
    assert names.count("TRANSPOSE") > plain_names.count("TRANSPOSE")
    assert not blocks.report["verify"]["litert_ref_vs_float"].get("skipped")
    published = onnx.load(blocks.out_dir / "model.onnx")
    assert "DepthToSpace" not in {n.op_type for n in published.graph.node}
    assert blocks.report["verify"]["int8_vs_float"]["passed"]
    assert blocks.report["float_ops"] == []

    from ai_edge_litert.interpreter import Interpreter

    def run(folder: Path) -> np.ndarray:
        it = Interpreter(model_path=str(folder / "model_int8.tflite"))
        it.allocate_tensors()
        i, o = it.get_input_details()[0], it.get_output_details()[0]
        scale, zero = i["quantization"]
        x = np.transpose(calib[:1], (0, *range(2, calib.ndim), 1)) if calib.ndim == 4 else calib[:1]
        x = np.clip(np.round(x.reshape(i["shape"]) / scale + zero), -128, 127).astype(np.int8)
        it.set_tensor(i["index"], x)
        it.invoke()
        s, z = o["quantization"]
        return (it.get_tensor(o["index"]).astype(np.float32) - z) * s

    a, b = run(blocks.out_dir).ravel(), run(plain.out_dir).ravel()
    assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) > 0.99
