"""Small nets for the verification tests, written here from the papers' descriptions and
briefly trained (seeded) so that their outputs depend on the input.

- ``deepphys_style``: DeepPhys (Chen & McDuff, ECCV 2018) per frame: a motion branch on
  normalised frame differences, an appearance branch on standardised frames, and after the
  second and fourth conv a 1-channel sigmoid attention mask from the appearance branch,
  normalised as ``H * W * mask / (2 * ||mask||_1)`` (a SUM over the mask in TFLite), that gates
  the motion features. Trained on synthetic rPPG clips (``tinyprune.data``) for ~1 s.
- ``multi_output``: a digits classifier whose forward returns a nested tuple/list of eleven
  tensors (enough for TFLiteConverter's string order of ``output_10`` to scramble them).
- ``ignores_input``: an exact float net whose int8 conversion loses the input-dependent part
  (a tiny channel shares an int8 scale with a large constant channel), so its int8 output is
  constant while the float output follows the input.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FRAME = 16  # DeepPhys input side (the paper uses 36; 16 keeps the test fast)


class L1Mask(nn.Module):
    """``H * W * g / (2 * ||g||_1)`` over each map's pixels.

    The norm is ``torch.linalg.vector_norm(ord=1)`` (ONNX ReduceL1, a SUM of ABS in TFLite),
    so this net keeps a SUM whose int8 rounding differs between TFLM and LiteRT's reference
    kernels (the export rewrites a plain ``sum`` to MEAN x count, which makes them agree).
    """

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        h, w = g.shape[2:]
        return h * w * g / (2 * torch.linalg.vector_norm(g, ord=1, dim=(2, 3), keepdim=True))


class DeepPhysStyle(nn.Module):
    """Per-frame DeepPhys: input ``(N, 6, S, S)`` = [frame difference (3), appearance (3)]."""

    input_shape = (6, FRAME, FRAME)

    def __init__(self, width: int = 8, hidden: int = 16) -> None:
        super().__init__()
        w = width
        self.motion = nn.ModuleList(_trunk(w))
        self.appearance = nn.ModuleList(_trunk(w))
        self.gate1, self.gate2 = nn.Conv2d(w, 1, 1), nn.Conv2d(2 * w, 1, 1)
        self.mask = L1Mask()
        self.pool = nn.AvgPool2d(2)
        side = ((FRAME - 2) // 2 - 2) // 2
        self.fc1, self.fc2 = nn.Linear(2 * w * side * side, hidden), nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, a = x[:, :3], x[:, 3:]
        mo, ap = self.motion, self.appearance
        d = torch.tanh(mo[1](torch.tanh(mo[0](m))))
        r = torch.tanh(ap[1](torch.tanh(ap[0](a))))
        d = self.pool(d * self.mask(torch.sigmoid(self.gate1(r))))
        r = self.pool(r)
        d = torch.tanh(mo[3](torch.tanh(mo[2](d))))
        r = torch.tanh(ap[3](torch.tanh(ap[2](r))))
        d = self.pool(d * self.mask(torch.sigmoid(self.gate2(r))))
        return self.fc2(torch.tanh(self.fc1(d.flatten(1))))


def _trunk(w: int) -> list[nn.Conv2d]:
    return [
        nn.Conv2d(3, w, 3, padding=1),
        nn.Conv2d(w, w, 3),
        nn.Conv2d(w, 2 * w, 3, padding=1),
        nn.Conv2d(2 * w, 2 * w, 3),
    ]


@cache
def rppg_frames() -> tuple[np.ndarray, np.ndarray]:
    """Synthetic clips as frames ``(N, 6, S, S)`` (DiffNormalized + Standardized) and labels."""
    from tinyprune.data.builders import build_synthetic_rppg

    bundle = build_synthetic_rppg(
        n_train=4,
        n_val=1,
        n_test=1,
        clips_per_video=1,
        size=FRAME,
        chunk=32,
        data_types=("DiffNormalized", "Standardized"),
        real_ppg=False,
        camera="off",  # noise-free frames: the figures these tests bound were measured so
    )
    x = bundle.train.x.transpose(0, 2, 1, 3, 4).reshape(-1, 6, FRAME, FRAME)
    return np.ascontiguousarray(x), bundle.train.y.reshape(-1)


def _fit(net: nn.Module, x: np.ndarray, y: np.ndarray, loss, epochs: int) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        for idx in torch.randperm(len(xs)).split(32):
            opt.zero_grad()
            loss(net(xs[idx]), ys[idx]).backward()
            opt.step()
    return net.eval()


@cache
def deepphys_style() -> nn.Module:
    """DeepPhysStyle trained for 30 short epochs (MSE on the DiffNormalized label)."""
    torch.manual_seed(0)
    x, y = rppg_frames()
    return _fit(DeepPhysStyle(), x, y, lambda p, t: F.mse_loss(p[:, 0], t), epochs=30)


@cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits as ``(N, 1, 8, 8)`` in [0, 1] and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[:, None] / 16.0).astype(np.float32), d.target.astype(np.int64)


class MultiOutput(nn.Module):
    """Digits net returning ``(logits, (embedding, probabilities), [feature maps])``."""

    input_shape = (1, 8, 8)

    def __init__(self, heads: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)
        self.heads = nn.ModuleList(nn.Conv2d(8, 2, 1) for _ in range(heads))

    def forward(self, x: torch.Tensor):  # noqa: ANN201
        h1 = F.relu(self.conv1(x))
        h2 = F.relu(self.conv2(h1))
        logits = self.fc(h2.flatten(1))
        maps = [head(h1) * (k + 1) for k, head in enumerate(self.heads)]
        return logits, (h2.mean(dim=(2, 3)), torch.sigmoid(logits)), maps


@cache
def multi_output(heads: int = 8) -> nn.Module:
    """MultiOutput trained for a few epochs on digits (cross-entropy on the logits)."""
    torch.manual_seed(0)
    x, y = digits()
    return _fit(MultiOutput(heads), x, y, lambda out, t: F.cross_entropy(out[0], t), epochs=4)


class IgnoresInput(nn.Module):
    """``10 mean(x) + 1`` in float, computed so that int8 loses the ``mean(x)`` part.

    Conv ``a`` makes channel 0 = ``0.01 x`` and channel 1 = 50 (a constant); one int8 scale for
    both (~0.2) rounds channel 0 to zero, so conv ``b`` (= 1000 ch0 + 1) gives a constant.
    """

    input_shape = (1, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 1), nn.Conv2d(2, 1, 1)
        with torch.no_grad():
            self.a.weight.copy_(torch.tensor([0.01, 0.0]).reshape(2, 1, 1, 1))
            self.a.bias.copy_(torch.tensor([0.0, 50.0]))
            self.b.weight.copy_(torch.tensor([1000.0, 0.0]).reshape(1, 2, 1, 1))
            self.b.bias.copy_(torch.tensor([1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)).mean(dim=(2, 3))


def build_multi_output() -> nn.Module:
    """Factory for ``tinyprune export field_nets.py:build_multi_output`` (5 outputs)."""
    return multi_output(2)
