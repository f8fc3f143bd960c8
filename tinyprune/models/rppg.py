"""3-D rPPG networks (PhysNet, DeeprPPG-R) and PhysNet's TFLM-friendly (2+1)-D variant.

Each maps a face clip to a BVP waveform ``(B, T)``, one sample per frame (docs/methods.md §6).
PhysNet and DeeprPPG-R use Conv3d / 3-D pooling, which TFLite Micro lacks (§7.1): they
export to LiteRT (Raspberry Pi) as is, and to TFLM only after a rewrite. ``physnet_2p1d``
(§7.3) replaces every 3x3x3 Conv3d by a per-frame 3x3 Conv2d and a temporal (3,1) Conv2d
over a ``(B, C, T, H*W)`` view, keeps PhysNet's pooling/upsampling pattern with 2-D ops,
and keeps every tensor at rank <= 4, so it runs on TFLM as is.
"""

from __future__ import annotations

import torch
from torch import nn

from tinyprune.errors import ConfigError
from tinyprune.models.contract import stamp_rppg_contract
from tinyprune.models.registry import register_model
from tinyprune.models.rppg_2d import (
    check_clip_size,
    frames_to_time,
    stacked_to_frames,
    time_to_frames,
    to_stacked,
)


def _conv3d_block(
    cin: int, cout: int, kernel: tuple[int, int, int], padding: tuple[int, int, int]
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, kernel, stride=1, padding=padding),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
    )


def _upsample3d(c: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose3d(c, c, kernel_size=(4, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0)),
        nn.BatchNorm3d(c),
        nn.ELU(inplace=True),
    )


class PhysNet(nn.Module):
    """PhysNet_padding_Encoder_Decoder_MAX (Yu et al., BMVC 2019), as in rPPG-Toolbox.

    Input ``(B, C, T, H, W)``; output ``(B, T)``. ``width`` is the first block's channel
    count (16 in the paper); later blocks use ``2*width`` and ``4*width``. ``T`` must be a
    multiple of 4 (two temporal poolings, two x2 upsamplings).
    """

    def __init__(self, frames: int = 128, width: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        c1, c2, c3 = width, 2 * width, 4 * width
        k3, p1 = (3, 3, 3), (1, 1, 1)
        self.frames = frames
        self.conv_block1 = _conv3d_block(in_channels, c1, (1, 5, 5), (0, 2, 2))
        self.conv_block2 = _conv3d_block(c1, c2, k3, p1)
        self.conv_block3 = _conv3d_block(c2, c3, k3, p1)
        self.conv_block4 = _conv3d_block(c3, c3, k3, p1)
        self.conv_block5 = _conv3d_block(c3, c3, k3, p1)
        self.conv_block6 = _conv3d_block(c3, c3, k3, p1)
        self.conv_block7 = _conv3d_block(c3, c3, k3, p1)
        self.conv_block8 = _conv3d_block(c3, c3, k3, p1)
        self.conv_block9 = _conv3d_block(c3, c3, k3, p1)
        self.upsample1 = _upsample3d(c3)
        self.upsample2 = _upsample3d(c3)
        self.pool_spa = nn.MaxPool3d((1, 2, 2), stride=(1, 2, 2))
        self.pool_spatem = nn.MaxPool3d((2, 2, 2), stride=2)
        self.pool_global = nn.AdaptiveAvgPool3d((frames, 1, 1))
        self.head = nn.Conv3d(c3, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C, T, H, W)`` to ``(B, T)``."""
        x = self.pool_spa(self.conv_block1(x))
        x = self.pool_spatem(self.conv_block3(self.conv_block2(x)))
        x = self.pool_spatem(self.conv_block5(self.conv_block4(x)))
        x = self.pool_spa(self.conv_block7(self.conv_block6(x)))
        x = self.conv_block9(self.conv_block8(x))
        x = self.upsample2(self.upsample1(x))
        x = self.head(self.pool_global(x))
        return x.reshape(x.shape[0], -1)


class DeeprPPG(nn.Module):
    """DeeprPPG-R: a reconstruction [R] of Liu & Yuen (FG 2020), docs/methods.md §6.5.

    Four Conv3d-BN-ReLU blocks (spatial max-pooling after the first three), a spatial mean,
    and a 1-D temporal head. Input ``(B, C, T, H, W)``; output ``(B, T)``.
    """

    def __init__(self, frames: int = 128, width: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        self.frames = frames
        c1, c2, c3, c4 = width, 2 * width, 2 * width, 4 * width
        k3, p1 = (3, 3, 3), (1, 1, 1)
        pool = (1, 2, 2)
        self.block1 = nn.Sequential(*_conv3d_block(in_channels, c1, k3, p1), nn.MaxPool3d(pool))
        self.block2 = nn.Sequential(*_conv3d_block(c1, c2, k3, p1), nn.MaxPool3d(pool))
        self.block3 = nn.Sequential(*_conv3d_block(c2, c3, k3, p1), nn.MaxPool3d(pool))
        self.block4 = _conv3d_block(c3, c4, k3, p1)
        self.head = nn.Sequential(
            nn.Conv1d(c4, c4 // 2, 5, padding=2), nn.ReLU(inplace=True), nn.Conv1d(c4 // 2, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C, T, H, W)`` to ``(B, T)``."""
        x = self.block4(self.block3(self.block2(self.block1(x))))
        x = x.mean(dim=(3, 4))
        return self.head(x).squeeze(1)


_frames_to_time = frames_to_time
_time_to_frames = time_to_frames


class Block2p1d(nn.Module):
    """Per-frame 3x3 Conv2d + BN + ReLU, then temporal (3,1) Conv2d + BN + ReLU (§7.3)."""

    def __init__(self, cin: int, cout: int, mid: int) -> None:
        super().__init__()
        self.spatial = nn.Sequential(
            nn.Conv2d(cin, mid, 3, padding=1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True)
        )
        self.temporal = nn.Sequential(
            nn.Conv2d(mid, cout, (3, 1), padding=(1, 0)),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """Map frames ``(B*T, Cin, H, W)`` to frames ``(B*T, Cout, H, W)``."""
        y = self.spatial(x)
        h, w = y.shape[-2:]
        return _time_to_frames(self.temporal(_frames_to_time(y, frames)), h, w)


def mid_channels(cin: int, cout: int, rule: str) -> int:
    """Width of the (2+1)-D bottleneck: ``"cout"`` or the R(2+1)D parameter-matching rule."""
    if rule == "cout":
        return cout
    if rule == "r2plus1d":
        return (27 * cin * cout) // (9 * cin + 3 * cout)
    msg = f"mid rule {rule!r} is not one of: cout, r2plus1d"
    raise ConfigError(msg)


class PhysNet2p1d(nn.Module):
    """PhysNet with (2+1)-D blocks and rank <= 4 tensors everywhere (TFLM-native, §7.3).

    Input: a frame-stacked clip ``(B, C, T*H, W)`` (frames stacked along the height axis,
    the same memory order as NHWC ``[T, H, W, C]``); a 5-D ``(B, C, T, H, W)`` clip is
    accepted too and stacked first. Output ``(B, T)``.
    """

    def __init__(
        self,
        frames: int = 32,
        img_size: int = 36,
        width: int = 8,
        in_channels: int = 3,
        mid: str = "cout",
    ) -> None:
        super().__init__()
        self.frames, self.img_size = frames, img_size
        c1, c2, c3 = width, 2 * width, 4 * width
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2), nn.BatchNorm2d(c1), nn.ReLU(inplace=True)
        )
        dims = [(c1, c2), (c2, c3)] + [(c3, c3)] * 6
        self.blocks = nn.ModuleList(Block2p1d(i, o, mid_channels(i, o, mid)) for i, o in dims)
        self.pool_spa = nn.MaxPool2d(2)
        self.pool_tem = nn.MaxPool2d((2, 1))
        self.upsample = nn.Sequential(
            *(
                nn.Sequential(
                    nn.ConvTranspose2d(c3, c3, (4, 1), stride=(2, 1), padding=(1, 0)),
                    nn.BatchNorm2d(c3),
                    nn.ELU(inplace=True),
                )
                for _ in range(2)
            )
        )
        self.head = nn.Conv2d(c3, 1, 1)

    def _pool_spatem(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        x = self.pool_spa(x)
        h, w = x.shape[-2:]
        return _time_to_frames(self.pool_tem(_frames_to_time(x, frames)), h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a stacked clip ``(B, C, T*H, W)`` (or ``(B, C, T, H, W)``) to ``(B, T)``."""
        t = self.frames
        x = stacked_to_frames(to_stacked(x), t)
        x = self.pool_spa(self.stem(x))
        x = self.blocks[1](self.blocks[0](x, t), t)
        x, t = self._pool_spatem(x, t), t // 2
        x = self.blocks[3](self.blocks[2](x, t), t)
        x, t = self._pool_spatem(x, t), t // 2
        x = self.pool_spa(self.blocks[5](self.blocks[4](x, t), t))
        x = self.blocks[7](self.blocks[6](x, t), t)
        x = self.upsample(_frames_to_time(x, t))  # (B, C, T, H*W)
        x = self.head(x.mean(dim=3, keepdim=True))  # (B, 1, T, 1)
        return x.reshape(x.shape[0], -1)


def _types_for(in_channels: int) -> tuple[str, ...] | None:
    """PhysNet-style inputs: ``DiffNormalized`` frames (3 channels), + ``Standardized`` (6)."""
    return {3: ("DiffNormalized",), 6: ("DiffNormalized", "Standardized")}.get(in_channels)


def _with_contract(model: nn.Module, frames: int, img_size: int, layout: str) -> nn.Module:
    types = _types_for(int(model.input_shape[0]))
    return model if types is None else stamp_rppg_contract(model, frames, img_size, types, layout)


def _check_frames(frames: int, multiple: int) -> None:
    if frames < multiple or frames % multiple:
        msg = (
            f"frames={frames} must be a positive multiple of {multiple} "
            "(the net pools time twice and upsamples it back)"
        )
        raise ConfigError(msg)


@register_model("physnet", task="rppg", input_shape=(3, 128, 72, 72), tflm_native=False)
def physnet(
    frames: int = 128, img_size: int = 72, width: int = 16, in_channels: int = 3
) -> nn.Module:
    """PhysNet 3-D encoder-decoder (Yu et al., BMVC 2019), exactly docs/methods.md §6.1.

    At defaults (T=128, 72x72, width 16): 768,577 params incl. BN, 17.56 G MACs per clip
    (4.36 G at 36x36, 55.6 G at 128x128).
    Needs Conv3d / 3-D pooling: LiteRT yes, TFLM only after a 2-D rewrite (§7.2).
    """
    _check_frames(frames, 4)
    check_clip_size(img_size, 8)
    model = PhysNet(frames=frames, width=width, in_channels=in_channels)
    model.input_shape = (in_channels, frames, img_size, img_size)
    return _with_contract(model, frames, img_size, "clip")


@register_model("deeprppg", task="rppg", input_shape=(3, 128, 64, 64), tflm_native=False)
def deeprppg(
    frames: int = 128, img_size: int = 64, width: int = 16, in_channels: int = 3
) -> nn.Module:
    """DeeprPPG-R, a lightweight 3-D rPPG net reconstructed [R] from Liu & Yuen (FG 2020).

    At defaults (T=128, 64x64 skin ROI, width 16): 108,801 params, 3.85 G MACs per clip.
    """
    check_clip_size(img_size, 8)
    if frames < 1:
        msg = f"frames={frames} must be >= 1"
        raise ConfigError(msg)
    model = DeeprPPG(frames=frames, width=width, in_channels=in_channels)
    model.input_shape = (in_channels, frames, img_size, img_size)
    return _with_contract(model, frames, img_size, "clip")


@register_model("physnet_2p1d", task="rppg", input_shape=(3, 32 * 36, 36), tflm_native=True)
def physnet_2p1d(
    frames: int = 32, img_size: int = 36, width: int = 8, in_channels: int = 3, mid: str = "cout"
) -> nn.Module:
    """PhysNet (2+1)-D variant for TFLM (docs/methods.md §7.3); frame-stacked input (C, T*H, W).

    At defaults (T=32, 36x36, width 8, mid=cout): 93,809 params, 160.6 M MACs per clip.
    ``width=16, mid="r2plus1d"`` gives PhysNet's widths with R(2+1)D-matched bottlenecks.
    """
    _check_frames(frames, 4)
    check_clip_size(img_size, 8)
    model = PhysNet2p1d(
        frames=frames, img_size=img_size, width=width, in_channels=in_channels, mid=mid
    )
    model.input_shape = (in_channels, frames * img_size, img_size)
    return _with_contract(model, frames, img_size, "stacked")


@register_model("test_physnet", task="rppg", input_shape=(3, 8, 16, 16), tflm_native=False)
def test_physnet(frames: int = 8, img_size: int = 16) -> nn.Module:
    """Tiny PhysNet (width 2) for tests."""
    return physnet(frames=frames, img_size=img_size, width=2)


@register_model("test_deeprppg", task="rppg", input_shape=(3, 8, 16, 16), tflm_native=False)
def test_deeprppg(frames: int = 8, img_size: int = 16) -> nn.Module:
    """Tiny DeeprPPG-R (width 2) for tests."""
    return deeprppg(frames=frames, img_size=img_size, width=2)


@register_model("test_physnet_2p1d", task="rppg", input_shape=(3, 8 * 16, 16), tflm_native=True)
def test_physnet_2p1d(frames: int = 8, img_size: int = 16) -> nn.Module:
    """Tiny (2+1)-D PhysNet (width 2) for tests."""
    return physnet_2p1d(frames=frames, img_size=img_size, width=2)
