"""Field-style rPPG nets written the way the field writes them (from the papers' descriptions,
not copied), briefly trained on synthetic clips so that their outputs depend on the input.

Every net takes one frame-stacked clip ``(1, C, T*S, S)`` (the frames one under the other, as a
device writes them) and returns one value per frame ``(1, T)``. Inside, each moves the frames
into the batch axis and then uses the published idioms as such:

- ``TSCANLike`` (TS-CAN, Liu et al., NeurIPS 2020): temporal shift written as in-place slice
  assignment into ``zeros_like`` of a 5-D view, a motion branch on normalised frame
  differences gated by attention masks from an appearance branch, each mask normalised by its
  own sum (``x / sum(x) * H * W / 2``), dense head.
- ``EfficientPhysLike`` (EfficientPhys, Liu et al., WACV 2023): ``torch.diff`` over the frames
  (batch) axis of raw standardised frames, a ``BatchNorm2d`` on those differences, temporal
  shift as slice assignment, self-attention masks (the mask comes from the motion features
  themselves), dense head.
- ``PhysFormerLike`` (PhysFormer, Yu et al., CVPR 2022; 2-D frames instead of 3-D tubes): a
  conv stem per frame, patch embedding (a strided conv per frame, then a strided conv over
  time), tokens ``(B, N, D)``, pre-norm transformer blocks with LayerNorm, multi-head
  self-attention whose heads are split with ``view`` + ``transpose(1, 2)`` and sharpened by a
  temperature, a GELU MLP, then temporal upsampling (``nn.Upsample`` on the time axis + conv
  + BatchNorm + ELU, as PhysFormer's upsampler) and a 1-D head (``Conv1d``).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SIDE = 16  # frame side
FRAMES = 8  # frames per clip


def frames_of(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Frame-stacked ``(B, C, T*S, W)`` -> frames ``(B*T, C, S, W)`` (4-D only for batch 1)."""
    b, c, ts, w = x.shape
    if b > 1:  # training batches only; the export traces batch 1
        return x.reshape(b, c, frames, ts // frames, w).transpose(1, 2).flatten(0, 1)
    return x.reshape(c, frames, ts // frames, w).transpose(0, 1)


class SumMask(nn.Module):
    """The published attention-mask normalisation: ``x / sum_HW(x) * H * W * 0.5``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sum(torch.sum(x, dim=2, keepdim=True), dim=3, keepdim=True)
        return x / s * x.shape[2] * x.shape[3] * 0.5


class SliceShift(nn.Module):
    """Temporal shift as TSM/TS-CAN write it: in-place slice assignment on a 5-D view."""

    def __init__(self, segment: int, fold_div: int = 3) -> None:
        super().__init__()
        self.segment, self.fold_div = segment, fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nt, c, h, w = x.size()
        x = x.view(nt // self.segment, self.segment, c, h, w)
        fold = c // self.fold_div
        out = torch.zeros_like(x)
        out[:, :-1, :fold] = x[:, 1:, :fold]
        out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]
        out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
        return out.view(nt, c, h, w)


def _head_size(side: int) -> int:
    return ((side - 2) // 2 - 2) // 2


class TSCANLike(nn.Module):
    """Input ``(1, 6, T*S, S)``: [DiffNormalized (3), Standardized (3)] per frame."""

    input_shape = (6, FRAMES * SIDE, SIDE)

    def __init__(self, frames: int = FRAMES, width: int = 8, hidden: int = 16) -> None:
        super().__init__()
        w, self.frames = width, frames
        self.tsm = nn.ModuleList(SliceShift(frames) for _ in range(4))
        self.motion = nn.ModuleList(_trunk(w))
        self.appearance = nn.ModuleList(_trunk(w))
        self.att1, self.att2 = nn.Conv2d(w, 1, 1), nn.Conv2d(2 * w, 1, 1)
        self.mask1, self.mask2 = SumMask(), SumMask()
        self.pool = nn.AvgPool2d(2)
        self.dense1 = nn.Linear(2 * w * _head_size(SIDE) ** 2, hidden)
        self.dense2 = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = frames_of(x, self.frames)
        d, r = f[:, :3], f[:, 3:]
        mo, ap, tsm = self.motion, self.appearance, self.tsm
        d = torch.tanh(mo[1](tsm[1](torch.tanh(mo[0](tsm[0](d))))))
        r = torch.tanh(ap[1](torch.tanh(ap[0](r))))
        d = self.pool(d * self.mask1(torch.sigmoid(self.att1(r))))
        r = self.pool(r)
        d = torch.tanh(mo[3](tsm[3](torch.tanh(mo[2](tsm[2](d))))))
        r = torch.tanh(ap[3](torch.tanh(ap[2](r))))
        d = self.pool(d * self.mask2(torch.sigmoid(self.att2(r))))
        out = self.dense2(torch.tanh(self.dense1(d.reshape(d.shape[0], -1))))
        return out.reshape(1, self.frames)


def _trunk(w: int) -> list[nn.Conv2d]:
    return [
        nn.Conv2d(3, w, 3, padding=1),
        nn.Conv2d(w, w, 3),
        nn.Conv2d(w, 2 * w, 3, padding=1),
        nn.Conv2d(2 * w, 2 * w, 3),
    ]


class EfficientPhysLike(nn.Module):
    """Input ``(1, 3, (T+1)*S, S)``: T+1 standardised frames; T outputs (their differences)."""

    input_shape = (3, (FRAMES + 1) * SIDE, SIDE)

    def __init__(self, frames: int = FRAMES, width: int = 8, hidden: int = 16) -> None:
        super().__init__()
        w, self.frames = width, frames
        self.batch_norm = nn.BatchNorm2d(3)
        self.tsm = nn.ModuleList(SliceShift(frames) for _ in range(4))
        self.convs = nn.ModuleList(_trunk(w))
        self.att1, self.att2 = nn.Conv2d(w, 1, 1), nn.Conv2d(2 * w, 1, 1)
        self.mask1, self.mask2 = SumMask(), SumMask()
        self.pool = nn.AvgPool2d(2)
        self.dense1 = nn.Linear(2 * w * _head_size(SIDE) ** 2, hidden)
        self.dense2 = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = frames_of(x, self.frames + 1)
        f = self.batch_norm(torch.diff(f, dim=0))
        c, t = self.convs, self.tsm
        d = torch.tanh(c[1](t[1](torch.tanh(c[0](t[0](f))))))
        d = self.pool(d * self.mask1(torch.sigmoid(self.att1(d))))
        d = torch.tanh(c[3](t[3](torch.tanh(c[2](t[2](d))))))
        d = self.pool(d * self.mask2(torch.sigmoid(self.att2(d))))
        out = self.dense2(torch.tanh(self.dense1(d.reshape(d.shape[0], -1))))
        return out.reshape(1, self.frames)


class Attention(nn.Module):
    """Multi-head self-attention, heads split as PhysFormer does (``view`` + ``transpose``)."""

    def __init__(self, dim: int, heads: int, sharpness: float) -> None:
        super().__init__()
        self.heads, self.sharpness = heads, sharpness
        self.proj_q, self.proj_k, self.proj_v = (nn.Linear(dim, dim) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (
            p(x).view(b, n, self.heads, d // self.heads).transpose(1, 2)
            for p in (self.proj_q, self.proj_k, self.proj_v)
        )
        scores = F.softmax(q @ k.transpose(-2, -1) / self.sharpness, dim=-1)
        return (scores @ v).transpose(1, 2).contiguous().view(b, n, d)


class Block(nn.Module):
    """Pre-norm transformer block: LayerNorm, attention, proj, LayerNorm, GELU MLP."""

    def __init__(self, dim: int, heads: int, sharpness: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn, self.proj = Attention(dim, heads, sharpness), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.proj(self.attn(self.norm1(x)))
        return x + self.mlp(self.norm2(x))


class PhysFormerLike(nn.Module):
    """Input ``(1, 3, T*S, S)`` normalised frame differences; tokens of 2 frames x 4x4 pixels."""

    input_shape = (3, FRAMES * SIDE, SIDE)

    def __init__(self, frames: int = FRAMES, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.frames, self.dim = frames, dim
        self.stem = nn.Sequential(
            nn.Conv2d(3, dim, 5, padding=2), nn.BatchNorm2d(dim), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.patch_space = nn.Conv2d(dim, dim, 2, stride=2)  # 8x8 -> 4x4 per frame
        self.patch_time = nn.Conv2d(dim, dim, (2, 1), stride=(2, 1))  # 2 frames per token
        self.blocks = nn.Sequential(*(Block(dim, heads, sharpness=2.0) for _ in range(2)))
        self.upsample = nn.Sequential(
            nn.Upsample(scale_factor=(2, 1)),
            nn.Conv2d(dim, dim // 2, (3, 1), padding=(1, 0)),
            nn.BatchNorm2d(dim // 2),
            nn.ELU(),
        )
        self.head = nn.Conv1d(dim // 2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[0], self.frames
        f = self.patch_space(self.stem(frames_of(x, t)))  # (B*T, D, 4, 4)
        d, gh, gw = f.shape[1:]
        f = f.reshape(b, t, d, gh * gw).permute(0, 2, 1, 3)  # (B, D, T, G)
        f = self.patch_time(f)  # (B, D, T/2, G)
        tokens = self.blocks(f.flatten(2).transpose(1, 2))  # (B, T/2*G, D)
        f = tokens.transpose(1, 2).reshape(b, d, t // 2, gh * gw)
        f = self.upsample(f.mean(dim=3, keepdim=True))  # (B, D/2, T, 1)
        return self.head(f.squeeze(3)).squeeze(1)


# --- data and training ---------------------------------------------------------------------


@cache
def clips(
    types: tuple[str, ...], frames: int, label: str = "DiffNormalized"
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic clips as frame-stacked ``(N, C, frames*S, S)`` and labels ``(N, frames)``."""
    from tinyprune.data.builders import build_synthetic_rppg

    bundle = build_synthetic_rppg(
        n_train=6,
        n_val=1,
        n_test=1,
        clips_per_video=6,
        size=SIDE,
        chunk=frames,
        data_types=types,
        label_type=label,
        real_ppg=False,
        camera="off",  # noise-free frames: the figures these tests bound were measured so
    )
    x = bundle.train.x  # (N, C, T, S, S)
    n, c = x.shape[:2]
    stacked = np.ascontiguousarray(x.reshape(n, c, frames * SIDE, SIDE), dtype=np.float32)
    return stacked, bundle.train.y.reshape(n, frames).astype(np.float32)


def _train(
    net: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, batch: int
) -> nn.Module:
    """Seeded Adam on the MSE, ``batch`` clips per step, on one thread (a tiny net on a loaded
    machine trains many times faster so)."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    net.train()
    try:
        for _ in range(epochs):
            for idx in torch.randperm(len(xs)).split(batch):
                opt.zero_grad()
                F.mse_loss(net(xs[idx]), ys[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


def _data(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "tscan_like":
        return clips(("DiffNormalized", "Standardized"), FRAMES)
    if name == "efficientphys_like":
        x, y = clips(("Standardized",), FRAMES + 1)
        return x, np.diff(y, axis=1)
    return clips(("DiffNormalized",), FRAMES)


NETS = {  # factory, epochs, learning rate, clips per step (TS-CAN/EfficientPhys-like: 1)
    "tscan_like": (TSCANLike, 6, 3e-3, 1),
    "efficientphys_like": (EfficientPhysLike, 6, 3e-3, 1),
    "physformer_like": (PhysFormerLike, 30, 3e-3, 6),
}


@cache
def trained(name: str) -> tuple[nn.Module, np.ndarray]:
    """One of :data:`NETS`, trained for a few seeded epochs; with its clips (calibration)."""
    build, epochs, lr, batch = NETS[name]
    torch.manual_seed(0)
    x, y = _data(name)
    return _train(build(), x, y, epochs, lr, batch), x
