"""Per-frame 2-D rPPG networks (DeepPhys, TS-CAN, EfficientPhys-C), TFLM-native.

These nets are Conv2d-only (docs/methods.md §6.2-§6.4), so they map to TFLite Micro builtins.
To export as one single-input model, a clip is fed *frame-stacked*: a 4-D tensor
``(B, C, T*H, W)`` whose frames are stacked along the height axis. In NHWC (what TFLM sees)
that is ``[1, T*H, W, C]``, byte-for-byte the same as ``[T, H, W, C]``: on the device one
writes the T frames one after the other. Inside, the nets move the frames into the batch
axis ``(B*T, C, H, W)`` with transpose/reshape ops and never build a rank-5 tensor. The
temporal shift module (TSM) and EfficientPhys' frame difference work on a time view
``(B, C, T, H*W)`` (channels kept on axis 1, which onnx2tf reads as NCHW correctly; a
``(B, T, C, H*W)`` view it misreads) with time slices, zero pads and a channel concat: exact,
no MACs, and one int8 scale per shift. Every net returns ``(B, T)``.

DeepPhys and TS-CAN take 6 channels per frame, ``[DiffNormalized (3), Standardized (3)]``,
computed outside the net as in rPPG-Toolbox. EfficientPhys takes 3 standardised channels and
differentiates inside (the last difference is zero-padded so T frames give T outputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tinyprune.errors import ConfigError
from tinyprune.models.contract import stamp_rppg_contract
from tinyprune.models.registry import register_model


def check_clip_size(img_size: int, minimum: int) -> None:
    """Raise :class:`ConfigError` unless ``img_size >= minimum``."""
    if img_size < minimum:
        msg = f"img_size={img_size} is too small for this net; expected >= {minimum}"
        raise ConfigError(msg)


def stack_frames(clip: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` clip -> frame-stacked ``(B, C, T*H, W)`` (a free reshape)."""
    b, c, t, h, w = clip.shape
    return clip.reshape(b, c, t * h, w)


def to_stacked(x: torch.Tensor) -> torch.Tensor:
    """Accept a 5-D clip or an already stacked 4-D clip; return the stacked 4-D form."""
    if x.dim() == 5:
        return stack_frames(x)
    if x.dim() != 4:
        msg = (
            f"rPPG input has shape {tuple(x.shape)}; expected (B, C, T*H, W) "
            "(frame-stacked) or (B, C, T, H, W)"
        )
        raise ConfigError(msg)
    return x


def stacked_to_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Frame-stacked ``(B, C, T*H, W)`` -> frames in the batch axis ``(B*T, C, H, W)``."""
    b, c, th, w = x.shape
    h = th // frames
    y = x.permute(0, 2, 3, 1).reshape(b * frames, h, w, c)
    return y.permute(0, 3, 1, 2)


def frames_to_time(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Frames ``(B*T, C, H, W)`` -> time view ``(B, C, T, H*W)`` (rank 4 throughout).

    In the time view channels stay on axis 1, so converters that read 4-D tensors as NCHW
    (onnx2tf) see time as "height" and convert pads, slices and concats along it correctly.
    """
    n, c, h, w = x.shape
    return x.reshape(n // frames, frames, c, h * w).permute(0, 2, 1, 3)


def time_to_frames(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Time view ``(B, C, T, H*W)`` -> frames ``(B*T, C, H, W)``."""
    b, c, t, _ = x.shape
    return x.permute(0, 2, 1, 3).reshape(b * t, c, h, w)


def shift_time(y: torch.Tensor, step: int) -> torch.Tensor:
    """On a time view ``(B, C, T, S)``: frame ``t`` takes frame ``t + step`` (``step`` = +1
    or -1) of the same clip, and the frame past the clip edge gets 0.

    A slice along time plus a zero PAD: both keep the input's int8 scale, so a whole shift
    quantizes with one scale (a roll times a clip-edge mask did not: the converter then
    asked a STRIDED_SLICE for two scales).
    """
    if step == 1:
        return F.pad(y[:, :, 1:], (0, 0, 0, 1))
    return F.pad(y[:, :, :-1], (0, 0, 1, 0))


def shift_frames(x: torch.Tensor, frames: int, step: int) -> torch.Tensor:
    """Frame ``i`` of every clip takes frame ``i + step`` (``step`` = +1 or -1), 0 past the end.

    Works on frames ``(B*T, C, H, W)`` through the time view (see :func:`shift_time`), so
    clips never leak into each other and every tensor stays rank 4.
    """
    h, w = x.shape[-2:]
    return time_to_frames(shift_time(frames_to_time(x, frames), step), h, w)


def temporal_shift(x: torch.Tensor, frames: int, fold_div: int = 3) -> torch.Tensor:
    """TSM (Lin et al., ICCV 2019) as in TS-CAN, on frames ``(B*T, C, H, W)``.

    Channels ``[0, C/fold_div)`` take the next frame's values (last frame gets 0), channels
    ``[C/fold_div, 2C/fold_div)`` the previous frame's (first frame gets 0), the rest stay.
    Exact in float; in int8 every part keeps the input's scale (slices, zero pads, one
    channel concat), and it adds no MACs.
    """
    fold = x.shape[1] // fold_div
    return shift_folds(x, frames, fold, fold)


def shift_folds(
    x: torch.Tensor, frames: int, n_next: int, n_prev: int, channels: int | None = None
) -> torch.Tensor:
    """TSM with explicit fold sizes: channels ``[0, n_next)`` take the next frame, the following
    ``n_prev`` the previous frame, the rest stay (empty folds are left out of the concat).
    ``channels`` (default ``x.shape[1]``) lets a traced export see plain integers.
    """
    h, w = x.shape[-2:]
    y = frames_to_time(x, frames)
    end, total = n_next + n_prev, x.shape[1] if channels is None else channels
    parts = [shift_time(y[:, :n_next], 1)] if n_next else []
    parts += [shift_time(y[:, n_next:end], -1)] if n_prev else []
    parts += [y[:, end:]] if end < total else []
    out = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
    return time_to_frames(out, h, w)


class TemporalShift(nn.Module):
    """:func:`temporal_shift` as a module that carries its fold sizes as data.

    Channel ``i`` of the output is channel ``i`` of the input moved in time, so structured
    pruning treats the shift as channel-wise (``channelwise_pruning = "identity"``): removing
    channels removes them from their fold (:meth:`remove_channels_`), and the pruned shift is
    exactly the original one with those channels zeroed. ``trace_stub`` (set while tracing
    channel dependencies) makes the forward a plain copy.
    """

    channelwise_pruning = "identity"

    def __init__(self, frames: int, channels: int, fold_div: int = 3) -> None:
        super().__init__()
        fold = channels // fold_div
        self.frames, self.channels, self.n_next, self.n_prev = frames, channels, fold, fold
        self.trace_stub = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shift ``x`` (frames ``(B*T, C, H, W)``) by its folds."""
        if self.trace_stub:
            return x.clone()
        if not torch.jit.is_tracing() and x.shape[1] != self.channels:
            msg = f"temporal shift built for {self.channels} channels got {x.shape[1]}"
            raise ConfigError(msg)
        return shift_folds(x, self.frames, self.n_next, self.n_prev, self.channels)

    def remove_channels_(self, idxs: list[int]) -> None:
        """Drop channels ``idxs`` (indices into the current channels) from their folds."""
        drop = {int(i) for i in idxs}
        end = self.n_next + self.n_prev
        self.n_prev -= sum(self.n_next <= i < end for i in drop)
        self.n_next -= sum(i < self.n_next for i in drop)
        self.channels -= len(drop)

    def extra_repr(self) -> str:
        """Fold sizes."""
        return f"channels={self.channels}, next={self.n_next}, prev={self.n_prev}"


def frame_difference(x: torch.Tensor, frames: int) -> torch.Tensor:
    """``x[t+1] - x[t]`` per clip on frames ``(B*T, C, H, W)``; the last frame's difference is 0.

    Both terms are a time slice plus a zero pad (next frame; current frame with the last one
    zeroed), so the last frame gives ``0 - 0`` exactly and each term keeps one int8 scale.
    """
    h, w = x.shape[-2:]
    y = frames_to_time(x, frames)
    cur = F.pad(y[:, :, :-1], (0, 0, 0, 1))
    return time_to_frames(shift_time(y, 1) - cur, h, w)


class AttentionMask(nn.Module):
    """Soft attention mask normalised so that it sums to H*W/2 (DeepPhys).

    Its one channel broadcasts over the gated branch, so structured pruning must not couple
    the branch's channels to it (``channelwise_pruning = "broadcast"``).
    """

    channelwise_pruning = "broadcast"
    trace_stub = False

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        """``g * H * W / (2 * sum_HW g)``, written as ``g / (2 * mean_HW g)``."""
        if self.trace_stub:
            return g.clone()
        return g / (2.0 * g.mean(dim=(2, 3), keepdim=True))


def _flat_size(img_size: int) -> int:
    s1 = (img_size - 2) // 2
    return (s1 - 2) // 2


def _dense_head(channels: int, size: int, hidden: int) -> tuple[nn.Conv2d, nn.Conv2d]:
    """The paper's Linear(C*S*S, hidden) and Linear(hidden, 1), written as convolutions.

    A ``size x size`` Conv2d on a ``(N, C, S, S)`` map is exactly that Linear on its
    ``flatten(1)`` (same weights reshaped, same params and MACs). As CONV_2D the int8 head
    requantizes the same way in TFLM and LiteRT's reference kernels, which a FULLY_CONNECTED
    does not (LiteRT's reference FC requantizes in float): the export stays bit-exact.
    """
    return nn.Conv2d(channels, hidden, size), nn.Conv2d(hidden, 1, 1)


class _Trunk(nn.Module):
    """conv1 (pad) - conv2 (no pad) - pool - conv3 (pad) - conv4 (no pad), tanh after each."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3)
        self.conv3 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.conv4 = nn.Conv2d(2 * width, 2 * width, 3)


class DeepPhys(nn.Module):
    """DeepPhys (Chen & McDuff, ECCV 2018); with ``tsm=True`` it is TS-CAN (Liu et al., 2020).

    Motion branch on DiffNormalized frames, appearance branch on standardised frames, two
    soft-attention gates from the appearance branch. Input ``(B, 6, T*H, W)``.
    """

    def __init__(
        self,
        frames: int,
        img_size: int,
        width: int = 32,
        hidden: int = 128,
        tsm: bool = False,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        self.frames, self.tsm = frames, tsm
        if tsm:
            self.shift = nn.ModuleList(
                TemporalShift(frames, c) for c in (3, width, width, 2 * width)
            )
        self.motion = _Trunk(3, width)
        self.appearance = _Trunk(3, width)
        self.att1 = nn.Conv2d(width, 1, 1)
        self.att2 = nn.Conv2d(2 * width, 1, 1)
        self.mask1, self.mask2 = AttentionMask(), AttentionMask()  # one per use (tracing)
        self.pool = nn.AvgPool2d(2)
        self.drop = nn.Dropout(dropout)
        self.dense1, self.dense2 = _dense_head(2 * width, _flat_size(img_size), hidden)
        self.drop_dense = nn.Dropout(2 * dropout)

    def _shift(self, x: torch.Tensor, i: int) -> torch.Tensor:
        return self.shift[i](x) if self.tsm else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, 6, T*H, W)`` (or ``(B, 6, T, H, W)``) to ``(B, T)``."""
        x = stacked_to_frames(to_stacked(x), self.frames)
        m, a = x[:, :3], x[:, 3:]
        mo, ap = self.motion, self.appearance
        d2 = torch.tanh(mo.conv2(self._shift(torch.tanh(mo.conv1(self._shift(m, 0))), 1)))
        r2 = torch.tanh(ap.conv2(torch.tanh(ap.conv1(a))))
        d = self.drop(self.pool(d2 * self.mask1(torch.sigmoid(self.att1(r2)))))
        r = self.drop(self.pool(r2))
        d6 = torch.tanh(mo.conv4(self._shift(torch.tanh(mo.conv3(self._shift(d, 2))), 3)))
        r6 = torch.tanh(ap.conv4(torch.tanh(ap.conv3(r))))
        d = self.drop(self.pool(d6 * self.mask2(torch.sigmoid(self.att2(r6)))))
        d = self.drop_dense(torch.tanh(self.dense1(d)))
        return self.dense2(d).reshape(-1, self.frames)


class EfficientPhys(nn.Module):
    """EfficientPhys-C (Liu et al., WACV 2023): one branch, learned input normalisation.

    Frame difference and BatchNorm2d(3) inside, TSM before each conv, self-attention gates
    from the same branch. Input ``(B, 3, T*H, W)`` of standardised frames.
    """

    def __init__(
        self, frames: int, img_size: int, width: int = 32, hidden: int = 128, dropout: float = 0.25
    ) -> None:
        super().__init__()
        self.frames = frames
        self.norm = nn.BatchNorm2d(3)
        self.trunk = _Trunk(3, width)
        self.shift = nn.ModuleList(TemporalShift(frames, c) for c in (3, width, width, 2 * width))
        self.att1 = nn.Conv2d(width, 1, 1)
        self.att2 = nn.Conv2d(2 * width, 1, 1)
        self.mask1, self.mask2 = AttentionMask(), AttentionMask()  # one per use (tracing)
        self.pool = nn.AvgPool2d(2)
        self.drop = nn.Dropout(dropout)
        self.dense1, self.dense2 = _dense_head(2 * width, _flat_size(img_size), hidden)
        self.drop_dense = nn.Dropout(2 * dropout)

    def _diff(self, x: torch.Tensor) -> torch.Tensor:
        """``x[t+1] - x[t]`` per clip; the last frame's difference is 0."""
        return frame_difference(x, self.frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, 3, T*H, W)`` (or ``(B, 3, T, H, W)``) to ``(B, T)``."""
        t, tr, sh = self.frames, self.trunk, self.shift
        x = self.norm(self._diff(stacked_to_frames(to_stacked(x), t)))
        d2 = torch.tanh(tr.conv2(sh[1](torch.tanh(tr.conv1(sh[0](x))))))
        d = self.drop(self.pool(d2 * self.mask1(torch.sigmoid(self.att1(d2)))))
        d5 = torch.tanh(tr.conv3(sh[2](d)))
        d6 = torch.tanh(tr.conv4(sh[3](d5)))
        d = self.drop(self.pool(d6 * self.mask2(torch.sigmoid(self.att2(d6)))))
        d = self.drop_dense(torch.tanh(self.dense1(d)))
        return self.dense2(d).reshape(-1, t)


_DEEPPHYS_TYPES = ("DiffNormalized", "Standardized")  # motion branch, appearance branch


def _check(frames: int, img_size: int, width: int) -> None:
    check_clip_size(img_size, 8)
    if frames < 2 or width < 3:
        msg = f"frames={frames} and width={width} must be >= 2 and >= 3"
        raise ConfigError(msg)


@register_model("deepphys", task="rppg", input_shape=(6, 10 * 36, 36), tflm_native=True)
def deepphys(frames: int = 10, img_size: int = 36, width: int = 16, hidden: int = 128) -> nn.Module:
    """DeepPhys two-branch CAN, frame-stacked input (6, T*H, W) = [diff(3), appearance(3)].

    At defaults (T=10, 36x36, width 16, half the paper's 32): 234,323 params, 134.8 M MACs
    per clip (13.5 M per frame). ``width=32`` is the paper net: 532,899 params,
    51.2 M MACs per frame at 36x36.
    """
    _check(frames, img_size, width)
    model = DeepPhys(frames, img_size, width=width, hidden=hidden, tsm=False)
    model.input_shape = (6, frames * img_size, img_size)
    return stamp_rppg_contract(model, frames, img_size, _DEEPPHYS_TYPES, "stacked")


@register_model("tscan", task="rppg", input_shape=(6, 10 * 36, 36), tflm_native=True)
def tscan(frames: int = 10, img_size: int = 36, width: int = 16, hidden: int = 128) -> nn.Module:
    """TS-CAN (DeepPhys + temporal shift, one TSM segment per clip), input (6, T*H, W).

    Same params/MACs as ``deepphys`` (the shift is free): 234,323 params, 134.8 M MACs per
    clip at defaults (T=10, 36x36, width 16).
    """
    _check(frames, img_size, width)
    model = DeepPhys(frames, img_size, width=width, hidden=hidden, tsm=True)
    model.input_shape = (6, frames * img_size, img_size)
    return stamp_rppg_contract(model, frames, img_size, _DEEPPHYS_TYPES, "stacked")


@register_model("efficientphys", task="rppg", input_shape=(3, 10 * 36, 36), tflm_native=True)
def efficientphys(
    frames: int = 10, img_size: int = 36, width: int = 16, hidden: int = 128
) -> nn.Module:
    """EfficientPhys-C, frame-stacked standardised frames (3, T*H, W), diff inside.

    At defaults (T=10, 36x36, width 16): 217,673 params, 68.6 M MACs per clip.
    ``width=32`` is the paper net: 467,337 params, 25.8 M MACs per frame at 36x36.
    """
    _check(frames, img_size, width)
    model = EfficientPhys(frames, img_size, width=width, hidden=hidden)
    model.input_shape = (3, frames * img_size, img_size)
    return stamp_rppg_contract(model, frames, img_size, ("Standardized",), "stacked")


@register_model("test_deepphys", task="rppg", input_shape=(6, 4 * 12, 12), tflm_native=True)
def test_deepphys(frames: int = 4, img_size: int = 12) -> nn.Module:
    """Tiny DeepPhys (width 4, hidden 8) for tests."""
    return deepphys(frames=frames, img_size=img_size, width=4, hidden=8)


@register_model("test_tscan", task="rppg", input_shape=(6, 4 * 12, 12), tflm_native=True)
def test_tscan(frames: int = 4, img_size: int = 12) -> nn.Module:
    """Tiny TS-CAN (width 4, hidden 8) for tests."""
    return tscan(frames=frames, img_size=img_size, width=4, hidden=8)


@register_model("test_efficientphys", task="rppg", input_shape=(3, 4 * 12, 12), tflm_native=True)
def test_efficientphys(frames: int = 4, img_size: int = 12) -> nn.Module:
    """Tiny EfficientPhys-C (width 4, hidden 8) for tests."""
    return efficientphys(frames=frames, img_size=img_size, width=4, hidden=8)
