"""What cannot become int8 on the target exits 4 naming the PyTorch module path and the op, in
one clean line, whichever stage finds it (issue 11 item 5); never exit 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tinyprune.errors import UnsupportedOpError, VerificationError

INNER = "blocks.odd"  # reached through a ModuleDict: torch.onnx's scope says only "odd"


class Inner(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "fold":
            return F.fold(F.unfold(x, 2, stride=2), (16, 16), 2, stride=2)
        if self.kind == "atan2":
            return torch.atan2(x, x * 0.5 + 1)
        if self.kind == "exp":
            return torch.exp(x.clamp(-4, 4))
        if self.kind == "where":
            return torch.where(x > 0, x, 0.1 * x)
        return x / (x.std((2, 3), keepdim=True) + 1e-3)  # "std": an int8 divisor of 0


class Wrap(nn.Module):
    input_shape = (3, 16, 16)

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleDict({"odd": Inner(kind)})
        self.o = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.o(self.blocks["odd"](self.c(x))).mean((2, 3))


class Recurrent(nn.Module):
    input_shape = (3, 16, 16)

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.rnn = nn.GRU(8, 8, batch_first=True)
        self.o = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.o(self.rnn(self.c(x).mean(3).transpose(1, 2))[0][:, -1])


def _export(model: nn.Module, target: str, out: Path) -> dict:
    from firmware_export import ExportOptions, export

    torch.manual_seed(0)
    calib = np.random.default_rng(0).standard_normal((12, 3, 16, 16)).astype(np.float32)
    opts = ExportOptions(calib_cap=12, verify_samples=6)
    return export(model.eval(), calib, target=target, out_dir=out, options=opts).report


def _unsupported(model: nn.Module, target: str, tmp_path: Path) -> UnsupportedOpError:
    with pytest.raises(UnsupportedOpError) as info:
        _export(model, target, tmp_path / "run")
    assert info.value.exit_code == 4 and not (tmp_path / "run").exists()
    text = str(info.value)
    assert "model_" not in text and "tf." not in text  # no onnx2tf / Keras names
    return info.value


def test_op_torch_onnx_cannot_export(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    error = _unsupported(Wrap("fold"), "rpi4", tmp_path)
    assert f"layer {INNER!r} uses aten::col2im" in str(error)
    printed = capfd.readouterr()
    assert "Torch IR graph" not in printed.out + printed.err  # torch's C++ dump is swallowed


@pytest.mark.tf
def test_op_without_tflite_builtin(tmp_path: Path) -> None:
    error = _unsupported(Wrap("atan2"), "rpi4", tmp_path)
    assert f"layer {INNER!r}" in str(error) and error.ops == ("Atan",)


@pytest.mark.tf
def test_tflm_kernel_without_int8(tmp_path: Path) -> None:
    error = _unsupported(Wrap("exp"), "cortex-m7", tmp_path)
    assert f"layer {INNER!r} needs EXP" in str(error) and error.ops == ("EXP",)


@pytest.mark.tf
def test_op_tflm_lacks_names_the_layer(tmp_path: Path) -> None:
    error = _unsupported(Wrap("where"), "cortex-m7", tmp_path)
    assert f"layer {INNER!r}" in str(error) and error.ops == ("SELECT",)


@pytest.mark.tf
def test_recurrent_layer_refused_before_the_converter_crashes(tmp_path: Path) -> None:
    error = _unsupported(Recurrent(), "rpi4", tmp_path)
    assert "layer 'rnn' exports to the ONNX op GRU" in str(error)


@pytest.mark.tf
@pytest.mark.slow
def test_float_only_tflm_kernel_is_fine_on_a_litert_target(tmp_path: Path) -> None:
    report = _export(Wrap("exp"), "rpi4", tmp_path / "run")
    assert report["float_ops"] == [] and not report["tflm_runnable"]
    assert "EXP" in report["ops"] and not (tmp_path / "run" / "model_data.cc").exists()


@pytest.mark.tf
@pytest.mark.slow
def test_int8_divisor_of_zero_is_a_verification_failure(tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match=f"at layer '{INNER}' \\(DIV"):
        _export(Wrap("std"), "rpi4", tmp_path / "run")
