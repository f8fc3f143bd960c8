r"""The ATen ops :mod:`firmware_export.rewrite_3d` runs time-as-batch, one handler each.

A handler takes the runner and the op's (evaluated) arguments, some of them
:class:`~firmware_export.rewrite_3d.Clip`\\ s, and returns the op's result with clips kept
time-as-batch, or raises :class:`~firmware_export.rewrite_3d_ops.NotExact` (the runner then
runs the op unchanged on the clip moved back to 5-D).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, TypeVar, cast

import torch
import torch.nn.functional as F

from firmware_export import rewrite_3d_ops as ops
from firmware_export.rewrite_3d_ops import Clip

aten = torch.ops.aten
Handler = Callable[..., Any]
HANDLERS: dict[Any, Handler] = {}

_BN = (aten._native_batch_norm_legit_no_training.default, aten.batch_norm.default)


_Fn = TypeVar("_Fn", bound=Handler)


def _on(*targets: Any) -> Callable[[_Fn], _Fn]:
    def register(fn: _Fn) -> _Fn:
        for t in targets:
            HANDLERS[t] = fn
        return fn

    return register


def _clip(x: Any, rank: int | None = None) -> Clip:
    if not isinstance(x, Clip) or (rank is not None and x.rank != rank):
        msg = "an operand that is not a clip of the expected rank"
        raise ops.NotExact(msg)
    return x


def _triple(v: Any, default: int | None = None) -> tuple[int, int, int]:
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        if default is None:
            msg = "a missing size argument"
            raise ops.NotExact(msg)
        return (default,) * 3
    if isinstance(v, int):
        return (v, v, v)
    if isinstance(v, str) or len(v) not in (1, 3):
        msg = f"padding or size {v!r} (only integers)"
        raise ops.NotExact(msg)
    t = tuple(int(i) for i in v)
    return (t[0],) * 3 if len(t) == 1 else t  # type: ignore[return-value]


# --- Conv3d / Conv1d over time / ConvTranspose3d, BatchNorm folded -------------------------


def _bn_user(r: Any) -> Any:
    """The eval-mode BatchNorm node that is the only user of the current node, if any."""
    users = list(r.node.users)
    if len(users) != 1 or users[0].target not in _BN or users[0].args[0] is not r.node:
        return None
    bn = users[0]
    if bn.target is aten.batch_norm.default and bn.args[5]:
        return None
    return bn


def _folded(
    r: Any, w: torch.Tensor, b: torch.Tensor | None, out_dim: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    bn = _bn_user(r)
    if bn is None:
        return w, b
    gamma, beta, mean, var = (r.value(a) for a in bn.args[1:5])
    eps = float(bn.args[6] if bn.target in _BN[:1] else bn.args[7])

    def make_w() -> torch.Tensor:
        s = torch.rsqrt(var.double() + eps) * (gamma.double() if gamma is not None else 1.0)
        shape = [1] * w.dim()
        shape[out_dim] = -1
        return (w.double() * s.reshape(shape)).to(w.dtype)

    def make_b() -> torch.Tensor:
        s = torch.rsqrt(var.double() + eps) * (gamma.double() if gamma is not None else 1.0)
        base = b.double() if b is not None else torch.zeros_like(s)
        shift = beta.double() if beta is not None else 0.0
        return cast(torch.Tensor, ((base - mean.double()) * s + shift).to(w.dtype))

    r.folded.add(bn.name)
    r.note("batchnorm-folded", bn)
    return r.derived("w_bn", make_w), r.derived("b_bn", make_b)


def _args(given: tuple[Any, ...], defaults: tuple[Any, ...]) -> tuple[Any, ...]:
    """An op's trailing positional arguments, with ATen's defaults for those not given."""
    return tuple(given) + defaults[len(given) :]


@_on(aten.conv3d.default)
def _conv3d(r: Any, x: Any, w: Any, b: Any = None, *rest: Any) -> Clip:
    """Conv3d: (stride, padding, dilation, groups)."""
    stride, padding, dilation, groups = _args(rest, (1, 0, 1, 1))
    geometry = (_triple(stride), _triple(padding), _triple(dilation))
    _clip(x, 5)
    w, b = _folded(r, w, b, 0)
    out = ops.conv3d(x.t, w, b, geometry, groups, r.owner.form)
    r.note("conv3d")
    return Clip(out, 5)


@_on(aten.conv3d.padding)
def _conv3d_named_padding(r: Any, x: Any, w: Any, b: Any = None, *rest: Any) -> Clip:
    """Conv3d with padding="valid" or "same" (symmetric only): the integer padding."""
    stride, padding, dilation, groups = _args(rest, (1, "valid", 1, 1))
    if padding == "valid":
        return _conv3d(r, x, w, b, stride, 0, dilation, groups)
    total = [d * (k - 1) for d, k in zip(_triple(dilation), w.shape[2:], strict=True)]
    if any(t % 2 for t in total):
        msg = 'padding="same" that pads one side more than the other'
        raise ops.NotExact(msg)
    return _conv3d(r, x, w, b, stride, [t // 2 for t in total], dilation, groups)


@_on(aten.conv1d.default)
def _conv1d(r: Any, x: Any, w: Any, b: Any = None, *rest: Any) -> Clip:
    """Conv1d over the time axis of a (1, C, T) clip: a Conv3d with a (k, 1, 1) kernel."""
    stride, padding, dilation, groups = _args(rest, (1, 0, 1, 1))
    _clip(x, 3)
    s, p, d = (_triple(v)[0] for v in (stride, padding, dilation))
    w, b = _folded(r, w, b, 0)
    geometry = ((s, 1, 1), (p, 0, 0), (d, 1, 1))
    out = ops.conv3d(x.t, w[..., None, None], b, geometry, groups, r.owner.form)
    r.note("conv1d-over-time")
    return Clip(out, 3)


@_on(aten.conv_transpose3d.input)
def _conv_transpose3d(r: Any, x: Any, w: Any, b: Any = None, *rest: Any) -> Clip:
    """ConvTranspose3d: (stride, padding, output_padding, groups, dilation)."""
    stride, padding, output_padding, groups, dilation = _args(rest, (1, 0, 0, 1, 1))
    _clip(x, 5)
    if groups != 1:
        msg = "a grouped transposed conv"
        raise ops.NotExact(msg)
    geometry = tuple(_triple(v) for v in (stride, padding, output_padding, dilation))
    w, b = _folded(r, w, b, 1)
    out = ops.conv_transpose3d(x.t, w, b, geometry)
    r.note("conv_transpose3d")
    return Clip(out, 5)


@_on(aten.convolution.default)
def _convolution(r: Any, x: Any, w: Any, b: Any, *rest: Any) -> Clip:
    """The generic convolution: (stride, padding, dilation, transposed, out_padding, groups)."""
    stride, padding, dilation, transposed, output_padding, groups = rest
    if w.dim() == 5 and transposed:
        return _conv_transpose3d(r, x, w, b, stride, padding, output_padding, groups, dilation)
    if w.dim() == 5:
        return _conv3d(r, x, w, b, stride, padding, dilation, groups)
    if w.dim() == 3 and not transposed:
        return _conv1d(r, x, w, b, stride, padding, dilation, groups)
    msg = "a convolution of this rank"
    raise ops.NotExact(msg)


@_on(*_BN)
def _batch_norm(r: Any, x: Any, weight: Any, bias: Any, mean: Any, var: Any, *rest: Any) -> Any:
    """Eval-mode BatchNorm: folded into the conv before it, else a per-channel affine."""
    native = r.node.target is _BN[0]
    if not native and rest[0]:
        msg = "batch norm in training mode"
        raise ops.NotExact(msg)
    x = _clip(x)
    if r.node.name in r.folded:
        return (x, None, None) if native else x
    eps = float(rest[1] if native else rest[2])
    y = Clip(F.batch_norm(x.t, mean, var, weight, bias, False, 0.0, eps), x.rank)
    r.note("batchnorm")
    return (y, None, None) if native else y


@_on(aten.instance_norm.default)
def _instance_norm(r: Any, x: Any, weight: Any, bias: Any, *rest: Any) -> Clip:
    """InstanceNorm3d: (running_mean, running_var, use_input_stats, momentum, eps, cudnn)."""
    if not rest[2]:
        msg = "instance norm with running statistics"
        raise ops.NotExact(msg)
    x = _clip(x, 5)
    r.note("instance_norm3d")
    return Clip(ops.instance_norm(x.t, weight, bias, float(rest[4])), 5)


# --- pooling, resizing ---------------------------------------------------------------------


def _no_indices(r: Any) -> None:
    if any(u.target is not operator.getitem or u.args[1] != 0 for u in r.node.users):
        msg = "pooling indices are used"
        raise ops.NotExact(msg)


@_on(aten.max_pool3d.default, aten.max_pool3d_with_indices.default)
def _max_pool3d(r: Any, x: Any, kernel: Any, *rest: Any) -> Any:
    """MaxPool3d: (stride, padding, dilation, ceil_mode)."""
    stride, padding, dilation, ceil_mode = _args(rest, ((), 0, 1, False))
    _clip(x, 5)
    if ceil_mode or _triple(dilation) != (1, 1, 1):
        msg = "ceil_mode or dilation in max pooling"
        raise ops.NotExact(msg)
    with_indices = r.node.target is aten.max_pool3d_with_indices.default
    if with_indices:
        _no_indices(r)
    k = _triple(kernel)
    y = Clip(ops.pool3d(x.t, "max", (k, _triple(stride, 0) if stride else k, _triple(padding))), 5)
    r.note("max_pool3d")
    return (y, None) if with_indices else y


@_on(aten.avg_pool3d.default)
def _avg_pool3d(r: Any, x: Any, kernel: Any, *rest: Any) -> Clip:
    """AvgPool3d: (stride, padding, ceil_mode, count_include_pad, divisor_override)."""
    stride, padding, ceil_mode, include_pad, divisor = _args(rest, ((), 0, False, True, None))
    _clip(x, 5)
    if ceil_mode or divisor is not None:
        msg = "ceil_mode or divisor_override in average pooling"
        raise ops.NotExact(msg)
    k = _triple(kernel)
    geometry = (k, _triple(stride) if stride else k, _triple(padding))
    r.note("avg_pool3d")
    return Clip(ops.pool3d(x.t, "avg", geometry, include_pad), 5)


@_on(aten.adaptive_avg_pool3d.default, aten.adaptive_max_pool3d.default)
def _adaptive_pool3d(r: Any, x: Any, size: Any) -> Any:
    """Adaptive 3-D pooling whose windows are uniform (output sizes divide input sizes)."""
    _clip(x, 5)
    is_max = r.node.target is aten.adaptive_max_pool3d.default
    if is_max:
        _no_indices(r)
    y = Clip(ops.adaptive_pool3d(x.t, "max" if is_max else "avg", _triple(size)), 5)
    r.note("adaptive_max_pool3d" if is_max else "adaptive_avg_pool3d")
    return (y, None) if is_max else y


def _out_size(x: Clip, size: Any, scales: Any) -> tuple[tuple[int, int, int], tuple[Any, ...]]:
    t, _, h, w = x.t.shape
    if size:
        return _triple(size), (None, None, None)
    sc = tuple(float(s) for s in scales)
    (nt, nh, nw) = (int(n * s) for n, s in zip((t, h, w), sc, strict=True))
    return (nt, nh, nw), sc


@_on(aten.upsample_nearest3d.vec)
def _upsample_nearest3d(r: Any, x: Any, size: Any, scales: Any) -> Clip:
    """nn.Upsample(mode="nearest") of a clip."""
    _clip(x, 5)
    out, sc = _out_size(x, size, scales)
    r.note("upsample3d-nearest")
    return Clip(ops.upsample3d(x.t, out, "nearest", scales=sc), 5)


@_on(aten.upsample_trilinear3d.vec)
def _upsample_trilinear3d(r: Any, x: Any, size: Any, align_corners: bool, scales: Any) -> Clip:
    """nn.Upsample(mode="trilinear") of a clip (separable: bilinear per frame, linear in time)."""
    _clip(x, 5)
    out, sc = _out_size(x, size, scales)
    r.note("upsample3d-linear")
    return Clip(ops.upsample3d(x.t, out, "linear", bool(align_corners), sc), 5)
