"""The per-layer table and the export's errors name PyTorch module paths, not onnx2tf's names."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from firmware_export.layer_names import LayerNames, module_names, module_path


class Block(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class Named(nn.Module):
    """Submodules reached through a Sequential, a ModuleList and a ModuleDict."""

    input_shape = (3, 12, 12)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)
        self.body = nn.Sequential(Block(4, 8))
        self.extra = nn.ModuleList([Block(8, 8)])
        self.gates = nn.ModuleDict({"spatial": nn.Conv2d(8, 1, 1)})
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.extra[0](self.body(torch.relu(self.stem(x))))
        x = x * torch.sigmoid(self.gates["spatial"](x))
        return self.head(x.mean((2, 3)))


def _onnx_names(model: nn.Module, shape: tuple[int, ...]) -> list[str]:
    import onnx

    buf = io.BytesIO()
    torch.onnx.export(model.eval(), (torch.zeros(1, *shape),), buf, opset_version=17, dynamo=False)
    return [n.name for n in onnx.load_from_string(buf.getvalue()).graph.node]


def test_every_torch_onnx_scope_resolves_to_a_real_module() -> None:
    torch.manual_seed(0)
    model = Named()
    modules = module_names(model)
    paths = {module_path(name, modules) for name in _onnx_names(model, Named.input_shape)}
    # torch.onnx writes '/body/body.0/conv/Conv' and '/spatial/Conv' (the ModuleDict key only)
    assert {"stem", "body.0.conv", "extra.0.conv", "gates.spatial", "head"} <= paths
    assert paths <= modules  # "" (the model's own forward) is a module name too


def test_module_path_skips_a_wrapper_scope_and_a_rewrite_suffix() -> None:
    modules = frozenset({"", "shift", "body", "body.0"})
    assert module_path("/module/body/body.0/Relu", modules) == "body.0"  # SelectOutput's scope
    assert module_path("/shift/ScatterND_2/Slice_5", modules) == "shift"
    assert module_path("/Relu", modules) == ""
    assert module_path("/a/a.b/c/Conv", None) == "a.b.c"  # an ONNX source: scopes joined


def test_fused_tensor_names_map_to_nodes_in_graph_order() -> None:
    names = LayerNames(
        {"tf.nn.convolution": "/stem/Conv", "tf.math.add": "/stem/Conv", "tf.nn.relu": "/Relu"},
        frozenset({"", "stem", "head"}),
        ("/head/Gemm",),
    )
    fused = "model_2/tf.nn.relu/Relu;model_2/tf.math.add/Add;model_2/tf.nn.convolution/c;Const_1"
    assert names.describe(fused) == "stem + forward"
    assert names.describe("PartitionedCall:0", 0) == "head"  # outputs are matched by position
    assert names.describe("PartitionedCall:0") is None


@pytest.mark.tf
def test_report_per_layer_table_names_module_paths(tmp_path: Path) -> None:
    from firmware_export import ExportOptions, export

    torch.manual_seed(0)
    calib = np.random.default_rng(0).standard_normal((12, *Named.input_shape)).astype(np.float32)
    result = export(
        Named().eval(),
        calib,
        target="cortex-m7",
        out_dir=tmp_path / "run",
        options=ExportOptions(calib_cap=12, verify_samples=6),
    )
    layers = result.report["layers"]
    by_op = {(row["op"], row["torch_layer"]) for row in layers}
    assert ("CONV_2D", "stem + forward") in by_op  # conv + the ReLU of forward, fused
    assert ("CONV_2D", "body.0.conv + body.0") in by_op  # conv (BN folded) + Block's ReLU
    assert ("CONV_2D", "extra.0.conv + extra.0") in by_op
    assert ("CONV_2D", "gates.spatial") in by_op
    assert ("FULLY_CONNECTED", "head") in by_op
    assert all(row["torch_layer"] for row in layers)
    md = (tmp_path / "run" / "report.md").read_text()
    table = md[md.index("## Layers") :]
    assert "| gates.spatial |" in table and "| head |" in table
    assert "tf.nn." not in table and "tf.math." not in table and "model_" not in table
    assert "gates.spatial" in (tmp_path / "run" / "report.html").read_text()
