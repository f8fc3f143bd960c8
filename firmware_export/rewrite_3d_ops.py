"""Time-as-batch forms of the 3-D layers of video nets, built from 2-D ops only.

A clip ``(1, C, T, H, W)`` is held as ``(T, C, H, W)``: each frame is one batch entry, so a
frame keeps its own spatial padding, spatial work is plain ``Conv2d``/``MaxPool2d`` over the
batch, and everything temporal is a slice, pad, concat or gather on axis 0 (TFLite's batch
axis, which is the same in NCHW and NHWC). Every function here takes and returns such a
``(T, C, H, W)`` tensor and computes exactly what the 3-D layer computes (up to float
summation order); :mod:`firmware_export.rewrite_3d` decides where they apply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


class NotExact(Exception):
    """This layer's configuration has no exact time-as-batch form here (the reason)."""


#: (rank 5 logical axis -> physical axis) for clips (1, C, T, H, W) held as (T, C, H, W).
_AXES = {5: {1: 1, 2: 0, 3: 2, 4: 3}, 3: {1: 1, 2: 0}}


@dataclass
class Clip:
    """A logical clip ``(1, C, T, H, W)`` (rank 5) or ``(1, C, T)`` (rank 3) held as
    ``(T, C, H, W)`` (``H = W = 1`` for rank 3).
    """

    t: torch.Tensor
    rank: int
    from_input: bool = False  # the model input itself (see rewrite_3d._settle)

    def logical_shape(self) -> tuple[int, ...]:
        """The shape the original graph sees."""
        t, c, h, w = self.t.shape
        return (1, c, t, h, w) if self.rank == 5 else (1, c, t)

    def axis(self, dim: int) -> int:
        """The physical axis of logical axis ``dim``; :class:`NotExact` for the batch axis."""
        d = dim % self.rank
        if d not in _AXES[self.rank]:
            msg = f"an op over the batch axis (dim {dim})"
            raise NotExact(msg)
        return _AXES[self.rank][d]


def to_clip(x: torch.Tensor) -> Clip:
    """``(1, C, T, H, W)`` -> time as batch: ``permute/reshape/permute`` (one onnx2tf RESHAPE)."""
    _, c, t, h, w = x.shape
    return Clip(x.permute(0, 2, 3, 4, 1).reshape(t, h, w, c).permute(0, 3, 1, 2), 5, True)


def from_clip(clip: Clip) -> torch.Tensor:
    """Back to the logical layout (the inverse of :func:`to_clip`)."""
    t, c, h, w = clip.t.shape
    cl = clip.t.permute(0, 2, 3, 1)
    if clip.rank == 5:
        return cl.reshape(1, t, h, w, c).permute(0, 4, 1, 2, 3)
    return cl.reshape(1, t, c).permute(0, 2, 1)


def pad_time(x: torch.Tensor, before: int, after: int, edge: bool = False) -> torch.Tensor:
    """Add ``before``/``after`` frames of zeros (or copies of the edge frames)."""
    if before == after == 0:
        return x
    if not edge:
        return F.pad(x, (0, 0, 0, 0, 0, 0, before, after))
    return torch.cat([x[:1]] * before + [x] + [x[-1:]] * after, 0)


def frames(x: torch.Tensor, start: int, count: int, step: int = 1) -> torch.Tensor:
    """Frames ``start, start + step, ...`` (``count`` of them); no op for the whole tensor."""
    if start == 0 and step == 1 and count == x.shape[0]:
        return x
    return x[start : start + step * (count - 1) + 1 : step]


def time_taps(
    x: torch.Tensor, k: int, stride: int, pad: int, dilation: int = 1, edge: bool = False
) -> list[torch.Tensor]:
    """The ``k`` shifted views whose frame ``o`` is input frame ``o*stride - pad + j*dilation``."""
    out = (x.shape[0] + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    if out < 1:
        msg = f"a temporal window of {k} frames does not fit {x.shape[0]} frames"
        raise NotExact(msg)
    xp = pad_time(x, pad, pad, edge)
    return [frames(xp, j * dilation, out, stride) for j in range(k)]


def conv3d(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    geometry: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]],
    groups: int = 1,
    form: str = "concat",
) -> torch.Tensor:
    """``Conv3d`` with weight ``(Cout, Cin/g, kT, kH, kW)`` as ``Conv2d`` over shifted frames.

    ``form="concat"`` stacks the kT shifted clips on channels for one ``Conv2d`` with a
    ``(Cout, kT*Cin, kH, kW)`` weight: one int32 accumulation and one requantisation in int8,
    as in the 3-D layer. ``form="sum"`` (also used for grouped convs) adds kT ``Conv2d``s, each
    requantised, then requantised again by every ADD. Measured on test_deeprppg (trained, to
    cortex-m7): concat 26.4 dB centred SQNR, 16.1 KB flash, 45.9 KB arena, 41 ops; sum 21.1 dB,
    23.8 KB, 37.7 KB, 62 ops. Concat is the default: more exact, smaller, fewer ops, for the
    stacked clip's extra arena.
    ``geometry`` is (stride, padding, dilation), each (t, h, w).
    """
    (st, sh, sw), (pt, ph, pw), (dt, dh, dw) = geometry
    kt = w.shape[2]
    taps = time_taps(x, kt, st, pt, dt)

    def conv(inp: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(inp, weight, bias, (sh, sw), (ph, pw), (dh, dw), groups)

    if kt == 1:
        return conv(taps[0], w[:, :, 0], b)
    if groups == 1 and form == "concat":
        w2 = w.transpose(1, 2).reshape(w.shape[0], kt * w.shape[1], *w.shape[3:])
        return conv(torch.cat(taps, 1), w2, b)
    y = conv(taps[0], w[:, :, 0], b)
    for j in range(1, kt):
        y = y + conv(taps[j], w[:, :, j], None)
    return y


def conv_transpose3d(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
    geometry: tuple[tuple[int, ...], ...],
) -> torch.Tensor:
    """``ConvTranspose3d`` (weight ``(Cin, Cout, kT, kH, kW)``) strided in time only.

    Output frame ``t' = q*s + r`` (phase ``r``) is a plain temporal conv of the input with the
    taps ``j`` whose ``r + pad - j*dil`` is a multiple of ``s``; each phase is one ``Conv2d``
    over its shifted clips (spatially a stride-1 transposed conv is a conv with the flipped
    kernel), and a gather on axis 0 interleaves the phases. ``geometry`` is (stride, padding,
    output_padding, dilation), each (t, h, w).
    """
    (st, sh, sw), (pt, ph, pw), (opt, oph, opw), (dt, dh, dw) = geometry
    _, _, kt, kh, kw = w.shape
    pad_h, pad_w = dh * (kh - 1) - ph, dw * (kw - 1) - pw
    if (sh, sw, oph, opw) != (1, 1, 0, 0) or pad_h < 0 or pad_w < 0:
        msg = "a transposed conv strided (or cropped) in space"
        raise NotExact(msg)
    t = x.shape[0]
    tout = (t - 1) * st - 2 * pt + dt * (kt - 1) + opt + 1
    tq = -(-tout // st)
    w2 = w.flip(3, 4).transpose(0, 1)  # spatially a plain conv: (Cout, Cin, kT, kH, kW)
    phases = []
    for r in range(st):
        taps = [(j, (r + pt - j * dt) // st) for j in range(kt) if (r + pt - j * dt) % st == 0]
        if not taps:
            msg = f"output phase {r} receives no kernel tap (kernel {kt}, stride {st})"
            raise NotExact(msg)
        shifts = [d for _, d in taps]
        lo, hi = max(0, -min(shifts)), max(0, tq - 1 + max(shifts) - (t - 1))
        xp = pad_time(x, lo, hi)
        clips = [frames(xp, d + lo, tq) for d in shifts]
        wr = torch.cat([w2[:, :, j] for j, _ in taps], 1)
        xin = clips[0] if len(clips) == 1 else torch.cat(clips, 1)
        phases.append(F.conv2d(xin, wr, b, padding=(pad_h, pad_w), dilation=(dh, dw)))
    if st == 1:
        return phases[0]
    order = [(o % st) * tq + o // st for o in range(tout)]
    return torch.cat(phases, 0).index_select(0, torch.tensor(order, dtype=torch.int32))


def pool3d(
    x: torch.Tensor,
    kind: str,
    geometry: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]],
    count_include_pad: bool = True,
) -> torch.Tensor:
    """Max/avg ``Pool3d`` (kernel, stride, padding) as a 2-D pool per frame, then over time.

    Both are separable over a box window: the max of maxes; the mean of means, whose divisor
    (the count of frames times the count of pixels inside the window) factors per axis.
    Temporal max padding repeats the edge frame (always inside the window), so it is exact.
    """
    (kt, kh, kw), (st, sh, sw), (pt, ph, pw) = geometry
    if (kh, kw, sh, sw, ph, pw) != (1, 1, 1, 1, 0, 0):
        if kind == "max":
            x = F.max_pool2d(x, (kh, kw), (sh, sw), (ph, pw))
        else:
            x = F.avg_pool2d(x, (kh, kw), (sh, sw), (ph, pw), count_include_pad=count_include_pad)
    if (kt, st, pt) == (1, 1, 0):
        return x
    taps = time_taps(x, kt, st, pt, edge=kind == "max")
    return reduce_taps(taps, kind, _time_divisors(x.shape[0], kt, st, pt, count_include_pad))


def _time_divisors(t: int, k: int, stride: int, pad: int, include_pad: bool) -> list[int]:
    out = (t + 2 * pad - k) // stride + 1
    if include_pad or pad == 0:
        return [k] * out
    return [sum(0 <= o * stride - pad + j < t for j in range(k)) for o in range(out)]


def reduce_taps(taps: list[torch.Tensor], kind: str, divisors: list[int]) -> torch.Tensor:
    """Elementwise max, or mean with a per-output-frame divisor, of the shifted clips."""
    acc = taps[0]
    for tap in taps[1:]:
        acc = torch.maximum(acc, tap) if kind == "max" else acc + tap
    if kind == "max":
        return acc
    if len(set(divisors)) == 1:
        return acc * (1.0 / divisors[0])
    scale = torch.tensor([1.0 / d for d in divisors], dtype=acc.dtype).reshape(-1, 1, 1, 1)
    return acc * scale


def adaptive_pool3d(x: torch.Tensor, kind: str, size: tuple[int, int, int]) -> torch.Tensor:
    """Adaptive max/avg 3-D pooling to ``size`` when every window is uniform (sizes divide)."""
    ot, oh, ow = size
    t, _, h, w = x.shape
    if t % ot or h % oh or w % ow:
        msg = f"output size {size} does not divide the input size {(t, h, w)}"
        raise NotExact(msg)
    if (oh, ow) == (1, 1) and (h, w) != (1, 1):
        x = x.amax((2, 3), keepdim=True) if kind == "max" else x.mean((2, 3), keepdim=True)
    elif (oh, ow) != (h, w):
        box = (h // oh, w // ow)
        x = F.max_pool2d(x, box, box) if kind == "max" else F.avg_pool2d(x, box, box)
    if ot == t:
        return x
    if ot == 1:
        return x.amax(0, keepdim=True) if kind == "max" else x.mean(0, keepdim=True)
    k = t // ot
    return reduce_taps(time_taps(x, k, k, 0), kind, [k] * ot)


def _nearest_sources(n_in: int, n_out: int, scale: float | None) -> list[int]:
    """PyTorch's nearest source index per output index (float32 arithmetic, as ATen)."""
    if n_out == n_in:
        return list(range(n_out))
    if n_out == 2 * n_in and scale in (None, 2.0):
        return [o >> 1 for o in range(n_out)]
    s = np.float32(1.0 / scale) if scale else np.float32(n_in) / np.float32(n_out)
    return [min(int(math.floor(np.float32(o) * s)), n_in - 1) for o in range(n_out)]


def _linear_sources(
    n_in: int, n_out: int, align_corners: bool, scale: float | None
) -> list[tuple[int, int, float]]:
    """(i0, i1, weight of i1) per output index, as ATen's linear interpolation."""
    if align_corners:
        s = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    else:
        s = 1.0 / scale if scale else n_in / n_out
    out = []
    for o in range(n_out):
        src = o * s if align_corners else max((o + 0.5) * s - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        out.append((i0, i1, src - i0))
    return out


def upsample3d(
    x: torch.Tensor,
    size: tuple[int, int, int],
    mode: str,
    align_corners: bool = False,
    scales: tuple[float | None, ...] = (None, None, None),
) -> torch.Tensor:
    """``nn.Upsample`` of a clip: spatially per frame (2-D resize), temporally by gathers."""
    t, _, h, w = x.shape
    ot, oh, ow = size
    if (oh, ow) != (h, w):
        sp = scales[1:] if all(s is not None for s in scales[1:]) else None
        kw: dict[str, object] = {"mode": "nearest" if mode == "nearest" else "bilinear"}
        if mode != "nearest":
            kw["align_corners"] = align_corners
        if sp is not None and mode == "nearest":
            x = F.interpolate(x, scale_factor=sp, **kw)  # type: ignore[arg-type]
        else:
            x = F.interpolate(x, size=(oh, ow), **kw)  # type: ignore[arg-type]
        if tuple(x.shape[2:]) != (oh, ow):
            msg = f"spatial resize gave {tuple(x.shape[2:])}, expected {(oh, ow)}"
            raise NotExact(msg)
    if ot == t:
        return x
    if mode == "nearest":
        return x.index_select(
            0, torch.tensor(_nearest_sources(t, ot, scales[0]), dtype=torch.int32)
        )
    src = _linear_sources(t, ot, align_corners, scales[0])
    i0 = torch.tensor([a for a, _, _ in src], dtype=torch.int32)
    i1 = torch.tensor([b for _, b, _ in src], dtype=torch.int32)
    lam = torch.tensor([f for _, _, f in src], dtype=x.dtype).reshape(-1, 1, 1, 1)
    return x.index_select(0, i0) * (1.0 - lam) + x.index_select(0, i1) * lam


def instance_norm(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """``InstanceNorm3d`` (batch 1): statistics per channel over time and space."""
    mu = x.mean((0, 2, 3), keepdim=True)
    d = x - mu
    y = d * torch.rsqrt((d * d).mean((0, 2, 3), keepdim=True) + eps)
    if weight is not None:
        y = y * weight.reshape(1, -1, 1, 1)
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    return y


def diff(
    x: torch.Tensor, n: int, axis: int, prepend: torch.Tensor | None, append: torch.Tensor | None
) -> torch.Tensor:
    """``torch.diff`` along a physical axis as slice differences."""
    parts = [p for p in (prepend, x, append) if p is not None]
    y = parts[0] if len(parts) == 1 else torch.cat(parts, axis)
    for _ in range(n):
        m = y.shape[axis]
        y = y.narrow(axis, 1, m - 1) - y.narrow(axis, 0, m - 1)
    return y


def elu(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """ELU as ``relu(x) + alpha*(exp(min(x, 0)) - 1)`` (see rewrite_3d on why)."""
    return torch.relu(x) + alpha * (torch.exp(torch.clamp(x, max=0.0)) - 1.0)
