"""3-D rPPG nets for the export tests, written here from the papers' descriptions and briefly
trained (seeded) on synthetic clips (``tinyprune.data``) so that their outputs depend on the input.

- ``PhysNetStyle``: PhysNet's encoder/decoder (Yu et al., BMVC 2019): a (1,5,5) stem, 3x3x3
  Conv3d-BN-ReLU blocks with spatial and spatio-temporal max pooling, then the decoder that
  restores the time axis: a ConvTranspose3d strided in time (BN, ELU) and a nearest
  ``nn.Upsample`` in time, a "keep time, pool space" AdaptiveAvgPool3d((None, 1, 1)) and a
  1x1x1 head.
- ``IBVPStyle``: iBVPNet-like (Joshi & Cho, 2024): frame differences (``torch.diff`` over
  time, first frame prepended) beside the frames, 3-D conv blocks with InstanceNorm3d, a
  temporal (5,1,1) conv, AdaptiveMaxPool3d((None, 1, 1)) and a 1x1x1 head.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FRAMES, SIDE = 8, 16


def _block(cin: int, cout: int, k: tuple[int, int, int], p: tuple[int, int, int]) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, k, padding=p), nn.BatchNorm3d(cout), nn.ReLU())


class PhysNetStyle(nn.Module):
    """Input ``(B, 3, T, S, S)``, output ``(B, T)``; ``T`` a multiple of 4."""

    input_shape = (3, FRAMES, SIDE, SIDE)

    def __init__(self, w: int = 8) -> None:
        super().__init__()
        self.stem = _block(3, w, (1, 5, 5), (0, 2, 2))
        self.pool_spa = nn.MaxPool3d((1, 2, 2), stride=(1, 2, 2))
        self.enc1 = _block(w, 2 * w, (3, 3, 3), (1, 1, 1))
        self.pool_st = nn.MaxPool3d(2, stride=2)
        self.enc2 = _block(2 * w, 2 * w, (3, 3, 3), (1, 1, 1))
        self.up_t = nn.Sequential(
            nn.ConvTranspose3d(2 * w, 2 * w, (4, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0)),
            nn.BatchNorm3d(2 * w),
            nn.ELU(),
        )
        self.up_nearest = nn.Upsample(scale_factor=(2, 1, 1), mode="nearest")
        self.dec = _block(2 * w, w, (3, 1, 1), (1, 0, 0))
        self.pool_global = nn.AdaptiveAvgPool3d((None, 1, 1))
        self.head = nn.Conv3d(w, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool_spa(self.stem(x))
        x = self.pool_st(self.enc1(x))
        x = self.pool_st(self.enc2(x))
        x = self.dec(self.up_nearest(self.up_t(x)))
        return self.head(self.pool_global(x)).flatten(1)


class IBVPStyle(nn.Module):
    """Input ``(B, 3, T, S, S)``, output ``(B, T)``."""

    input_shape = (3, FRAMES, SIDE, SIDE)

    def __init__(self, w: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(6, w, (3, 3, 3), padding=1)
        self.norm1 = nn.InstanceNorm3d(w, affine=True)
        self.conv2 = nn.Conv3d(w, 2 * w, (3, 3, 3), stride=(1, 2, 2), padding=1)
        self.norm2 = nn.InstanceNorm3d(2 * w, affine=True)
        self.pool = nn.AvgPool3d((1, 2, 2))
        self.temporal = nn.Conv3d(2 * w, 2 * w, (5, 1, 1), padding=(2, 0, 0))
        self.pool_global = nn.AdaptiveMaxPool3d((None, 1, 1))
        self.head = nn.Conv3d(2 * w, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = torch.diff(x, dim=2, prepend=x[:, :, :1])
        x = torch.cat([x, d], dim=1)
        x = F.elu(self.norm1(self.conv1(x)))
        x = self.pool(F.relu(self.norm2(self.conv2(x))))
        x = torch.tanh(self.temporal(x))
        return self.head(self.pool_global(x)).flatten(1)


@cache
def rppg_clips() -> tuple[np.ndarray, np.ndarray]:
    """Synthetic standardized clips ``(N, 3, T, S, S)`` and their BVP labels ``(N, T)``."""
    from tinyprune.data.builders import build_synthetic_rppg

    bundle = build_synthetic_rppg(
        n_train=6,
        n_val=1,
        n_test=1,
        clips_per_video=6,
        size=SIDE,
        chunk=FRAMES,
        data_types=("Standardized",),
        real_ppg=False,
        camera="off",  # noise-free frames: the figures these tests bound were measured so
    )
    return np.ascontiguousarray(bundle.train.x, dtype=np.float32), bundle.train.y


def fit(net: nn.Module, epochs: int = 6) -> nn.Module:
    """Train ``net`` (seeded) to the clips' labels with MSE; eval mode afterwards."""
    torch.manual_seed(0)
    x, y = rppg_clips()
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y).float()
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xs)).split(8):
            opt.zero_grad()
            F.mse_loss(net(xs[idx]), ys[idx]).backward()
            opt.step()
    return net.eval()


@cache
def trained(name: str) -> nn.Module:
    """A briefly trained net: ``physnet_style``, ``ibvp_style`` or a zoo name."""
    torch.manual_seed(0)
    if name == "physnet_style":
        return fit(PhysNetStyle())
    if name == "ibvp_style":
        return fit(IBVPStyle())
    from tinyprune.models import create_model

    return fit(create_model(name, frames=FRAMES, img_size=SIDE))
