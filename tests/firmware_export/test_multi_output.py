"""A forward that returns a nested tuple/list exports every output, in order, verified per
output; ``--output N`` exports output N alone; a bad N is a usage error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_runs import export_argv
from field_nets import digits, multi_output

from firmware_export import ExportOptions, export
from firmware_export.outputs import signature_output_keys
from firmware_export.tflite_model import parse_tflite
from tinyprune.cli import main

pytestmark = pytest.mark.tf

NETS = Path(__file__).with_name("field_nets.py")
ORIGINS = [
    "forward()[0]",
    "forward()[1][0]",
    "forward()[1][1]",
    "forward()[2][0]",
    "forward()[2][1]",
]


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "digits.npy"
    np.save(path, digits()[0][:64])
    return path


def test_every_output_is_exported_in_order_and_verified(tmp_path: Path) -> None:
    x, _ = digits()
    result = export(
        multi_output(2),
        x[:64],
        target="cortex-m7",
        out_dir=tmp_path,
        options=ExportOptions(calib_cap=64, verify_samples=16),
    )
    report = result.report
    assert [o["label"] for o in report["outputs"]] == [f"out{k}" for k in range(5)]
    assert [o["origin"] for o in report["outputs"]] == ORIGINS
    assert [o["shape"] for o in report["outputs"]] == [
        [1, 10],
        [1, 16],
        [1, 10],
        [1, 8, 8, 2],
        [1, 8, 8, 2],
    ]
    assert report["output_selected"] is None
    model = (tmp_path / "model_int8.tflite").read_bytes()
    keys = signature_output_keys(model)  # the converter's keys, mapped back to positions
    assert [keys[f"output_{k}"] for k in range(5)] == list(parse_tflite(model).outputs)
    for name, entry in report["verify"].items():
        assert [row["label"] for row in entry["outputs"]] == [f"out{k}" for k in range(5)], name
    # out3/out4 (and out0/out2) share a shape: a mix-up would show as a low cosine
    gate = report["verify"]["int8_vs_float"]
    assert all(row["passed"] and row["cos"] > 0.99 for row in gate["outputs"])
    assert all(row["centred_gated"] and row["centred_cos"] > 0.95 for row in gate["outputs"])
    assert report["verify"]["tflm_vs_litert_ref"]["max_abs"] == 0
    header = (tmp_path / "model_data.h").read_text()
    assert "constexpr int kMultioutputOutputCount = 5;" in header
    assert "constexpr int kMultioutputOutput4Index = 4;" in header
    assert "constexpr int kMultioutputOutput4Dims[] = {1, 8, 8, 2};" in header
    assert "out1 = forward()[1][0]" in header
    scale = report["outputs"][2]["scale"][0]
    assert f"kMultioutputOutput2Scale = {scale:.9g}" in header
    md = (tmp_path / "report.md").read_text()
    assert "| int8_vs_float [out4] |" in md


def test_output_option_keeps_one_output(calib: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = export_argv(
        f"{NETS}:build_multi_output", calib, "rpi4", out, "--output", "1", "--verify-samples", "16"
    )
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["output_selected"] == 1
    assert [(o["label"], o["origin"], o["shape"]) for o in report["outputs"]] == [
        ("out0", "forward()[1][0]", [1, 16])
    ]
    assert len(parse_tflite((out / "model_int8.tflite").read_bytes()).outputs) == 1
    gate = report["verify"]["int8_vs_float"]
    assert len(gate["outputs"]) == 1 and gate["passed"] and gate["runtime"] == "litert_xnnpack"


def test_output_out_of_range_is_a_usage_error(calib: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    argv = export_argv(f"{NETS}:build_multi_output", calib, "rpi4", out, "--output", "5")
    assert main(argv) == 2
    assert "has 5 output(s), numbered 0..4" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_onnx_source_keeps_every_output_or_the_selected_one(calib: Path, tmp_path: Path) -> None:
    import torch

    path = tmp_path / "net.onnx"
    torch.onnx.export(
        multi_output(2),
        (torch.from_numpy(digits()[0][:1]),),
        str(path),
        opset_version=17,
        dynamo=False,
        input_names=["x"],
        output_names=["logits", "emb", "probs", "map0", "map1"],
    )
    out = tmp_path / "run"
    argv = export_argv(str(path), calib, "rpi4", out, "--output", "3", "--verify-samples", "8")
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert [(o["origin"], o["shape"]) for o in report["outputs"]] == [
        ("ONNX output 'map0'", [1, 8, 8, 2])
    ]
    assert report["verify"]["int8_vs_float"]["passed"]
