"""Sparse int8 TFLite: a ~90 %-zero model gets a smaller file with identical LiteRT outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from firmware_export import sparse
from firmware_export.calibration import to_channels_last
from firmware_export.verify import run_litert
from tinyprune.errors import ConfigError, VerificationError

ZERO_FRACTION = 0.9


def _net(zero_fraction: float) -> nn.Module:
    """Conv-conv-FC net whose Conv/Linear weights have ``zero_fraction`` exact zeros (seeded)."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.Conv2d | nn.Linear) and zero_fraction > 0:
                w = mod.weight.view(-1)
                w[torch.randperm(w.numel(), generator=gen)[: int(zero_fraction * w.numel())]] = 0
    net.input_shape = (3, 12, 12)  # type: ignore[assignment]
    return net.eval()


def _export(tmp: Path, zero_fraction: float) -> tuple[Path, np.ndarray, bytes]:
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    import firmware_export

    calib = np.random.default_rng(0).standard_normal((12, 3, 12, 12)).astype(np.float32)
    res = firmware_export.export(  # (block convolutions would add a pick weight of zeros)
        _net(zero_fraction),
        calib,
        target="rpi4",
        out_dir=tmp / "out",
        options=firmware_export.ExportOptions(space_to_depth="off"),
        raise_on_budget=False,
    )
    return tmp / "out" / "saved_model", to_channels_last(calib), res.paths["tflite"].read_bytes()


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[sparse.SparseResult, bytes]:
    saved, cl, dense = _export(tmp_path_factory.mktemp("sparse"), ZERO_FRACTION)
    result = sparse.sparse_tflite(saved, cl, dense)
    assert result is not None
    return result, dense


@pytest.mark.tf
def test_sparse_model_is_smaller_and_identical(
    sparse_run: tuple[sparse.SparseResult, bytes],
) -> None:
    result, dense = sparse_run
    assert result.dense_bytes == len(dense)
    # 4 weight tensors at 10 % density: well under the dense file even with index overhead
    assert result.sparse_bytes < 0.9 * len(dense)
    assert result.sparse_tensors == 4 and result.densify_ops == 4
    assert result.identical and result.max_abs_diff == 0 and result.samples == 8


@pytest.mark.tf
def test_sparse_outputs_equal_dense_on_other_inputs(
    sparse_run: tuple[sparse.SparseResult, bytes],
) -> None:
    result, dense = sparse_run
    x = np.random.default_rng(1).integers(-128, 128, (5, 12, 12, 3)).astype(np.int8)
    np.testing.assert_array_equal(
        run_litert(result.model_bytes, x, "builtin"), run_litert(dense, x, "builtin")
    )


@pytest.mark.tf
def test_report_section_is_json_ready(
    sparse_run: tuple[sparse.SparseResult, bytes], tmp_path: Path
) -> None:
    result, dense = sparse_run
    rep = json.loads(json.dumps(result.to_report()))
    assert rep["file"] == "model_int8_sparse.tflite"
    assert rep["bytes"] == len(result.model_bytes)
    assert rep["saved_bytes"] == len(dense) - len(result.model_bytes) > 0
    assert rep["verify"]["identical"] is True
    assert rep["runtimes"]["tflm"] is False
    assert rep["runtimes"]["litert_xnnpack"] is _xnnpack_runs(result.model_bytes, tmp_path)


def _xnnpack_runs(model: bytes, tmp_path: Path) -> bool:
    """Independent check: does LiteRT with its default XNNPACK delegate run the model?

    In a child process, since a native runtime may abort on a model it cannot prepare.
    """
    path = tmp_path / "sparse.tflite"
    path.write_bytes(model)
    code = (
        "import sys, numpy as np\n"
        "from ai_edge_litert.interpreter import Interpreter\n"
        "it = Interpreter(model_path=sys.argv[1])\n"
        "it.allocate_tensors()\n"
        "d = it.get_input_details()[0]\n"
        "it.set_tensor(d['index'], np.zeros(d['shape'], d['dtype']))\n"
        "it.invoke()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, check=False)
    return proc.returncode == 0


@pytest.mark.tf
def test_mismatch_raises_verification_error(
    sparse_run: tuple[sparse.SparseResult, bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result, dense = sparse_run
    calls: list[bytes] = []

    def fake_run(model_bytes: bytes, inputs: np.ndarray, resolver: str) -> list[np.ndarray]:
        calls.append(model_bytes)
        out = np.zeros((len(inputs), 10), np.int8)
        out[:, 3] = 0 if model_bytes == dense else 2
        return [np.zeros((len(inputs), 2), np.int8), out]  # the difference is on output 1

    monkeypatch.setattr(sparse, "run_litert_outputs", fake_run)
    monkeypatch.setattr(sparse, "quantize_int8", lambda *a, **k: result.model_bytes)
    cl = np.zeros((2, 12, 12, 3), np.float32)
    with pytest.raises(VerificationError, match="differ from the dense model's by up to 2 LSB"):
        sparse.sparse_tflite(tmp_path, cl, dense, check_xnnpack=False)
    assert len(calls) == 2


@pytest.mark.tf
def test_dense_weights_give_none(tmp_path: Path) -> None:
    saved, cl, dense = _export(tmp_path, 0.0)
    assert sparse.sparse_tflite(saved, cl, dense, check_xnnpack=False) is None


def test_empty_calibration_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"N >= 1, got shape \(0, 4, 4, 3\)"):
        sparse.sparse_tflite(tmp_path, np.zeros((0, 4, 4, 3), np.float32), b"")
