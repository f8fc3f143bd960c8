"""Models that torch.onnx or onnx2tf cannot convert, and one with NaN weights (for tests)."""

from __future__ import annotations

import torch
from torch import nn


class Spectrum(nn.Module):
    """rFFT magnitude: torch.onnx (opset 17) has no aten::fft_rfft."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(x).abs()


class FftNet(nn.Module):
    input_shape = (1, 16)

    def __init__(self) -> None:
        super().__init__()
        self.spec = Spectrum()
        self.fc = nn.Linear(9, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.spec(x))


class LstmNet(nn.Module):
    input_shape = (8, 4)

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, batch_first=True)
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.lstm(x)[0][:, -1])


def fft() -> nn.Module:
    return FftNet()


def lstm() -> nn.Module:
    torch.manual_seed(0)
    return LstmNet()


def nan_weights() -> nn.Module:
    net = FftNet()
    net.spec = nn.Identity()  # type: ignore[assignment]
    net.fc = nn.Linear(16, 2)
    with torch.no_grad():
        net.fc.weight[1, 3] = float("nan")
    return net
