"""The ATen ops :mod:`firmware_export.rewrite_3d` runs time-as-batch, one handler each.

A handler takes the runner and the op's (evaluated) arguments, some of them
:class:`~firmware_export.rewrite_3d.Clip`\\ s, and returns the op's result with clips kept
time-as-batch, or raises :class:`~firmware_export.rewrite_3d_ops.NotExact` (the runner then
runs the op unchanged on the clip moved back to 5-D).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from firmware_export import rewrite_3d_ops as ops
from firmware_export.rewrite_3d import Clip

aten = torch.ops.aten
Handler = Callable[..., Any]
HANDLERS: dict[Any, Handler] = {}

_BN = (aten._native_batch_norm_legit_no_training.default, aten.batch_norm.default)


def _on(*targets: Any) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
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
        return ((base - mean.double()) * s + shift).to(w.dtype)

    r.folded.add(bn.name)
    r.note("batchnorm-folded", bn)
    return r.derived("w_bn", make_w), r.derived("b_bn", make_b)


@_on(aten.conv3d.default)
def conv3d(
    r: Any,
    x: Any,
    w: Any,
    b: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> Clip:
    geometry = (_triple(stride), _triple(padding), _triple(dilation))
    _clip(x, 5)
    w, b = _folded(r, w, b, 0)
    out = ops.conv3d(x.t, w, b, geometry, groups, r.owner.form)
    r.note("conv3d")
    return Clip(out, 5)


@_on(aten.conv1d.default)
def conv1d(
    r: Any,
    x: Any,
    w: Any,
    b: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> Clip:
    _clip(x, 3)
    s, p, d = (_triple(v)[0] for v in (stride, padding, dilation))
    w, b = _folded(r, w, b, 0)
    w5 = w[..., None, None]
    out = ops.conv3d(x.t, w5, b, ((s, 1, 1), (p, 0, 0), (d, 1, 1)), groups, r.owner.form)
    r.note("conv1d-over-time")
    return Clip(out, 3)


@_on(aten.conv_transpose3d.input)
def conv_transpose3d(
    r: Any,
    x: Any,
    w: Any,
    b: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
) -> Clip:
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
def convolution(
    r: Any,
    x: Any,
    w: Any,
    b: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    transposed: bool,
    output_padding: Any,
    groups: int,
) -> Clip:
    if w.dim() == 5 and transposed:
        return conv_transpose3d(r, x, w, b, stride, padding, output_padding, groups, dilation)
    if w.dim() == 5:
        return conv3d(r, x, w, b, stride, padding, dilation, groups)
    if w.dim() == 3 and not transposed:
        return conv1d(r, x, w, b, stride, padding, dilation, groups)
    msg = "a convolution of this rank"
    raise ops.NotExact(msg)


@_on(*_BN)
def batch_norm(r: Any, x: Any, weight: Any, bias: Any, mean: Any, var: Any, *rest: Any) -> Any:
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
def instance_norm(
    r: Any,
    x: Any,
    weight: Any,
    bias: Any,
    mean: Any,
    var: Any,
    use_input_stats: bool,
    momentum: float,
    eps: float,
    cudnn: bool = False,
) -> Clip:
    if not use_input_stats:
        msg = "instance norm with running statistics"
        raise ops.NotExact(msg)
    x = _clip(x, 5)
    r.note("instance_norm3d")
    return Clip(ops.instance_norm(x.t, weight, bias, eps), 5)


# --- pooling, resizing ---------------------------------------------------------------------


def _no_indices(r: Any) -> None:
    if any(u.target is not operator.getitem or u.args[1] != 0 for u in r.node.users):
        msg = "pooling indices are used"
        raise ops.NotExact(msg)


@_on(aten.max_pool3d.default, aten.max_pool3d_with_indices.default)
def max_pool3d(
    r: Any,
    x: Any,
    kernel: Any,
    stride: Any = (),
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
) -> Any:
    _clip(x, 5)
    if ceil_mode or _triple(dilation) != (1, 1, 1):
        msg = "ceil_mode or dilation in max pooling"
        raise ops.NotExact(msg)
    k = _triple(kernel)
    with_indices = r.node.target is aten.max_pool3d_with_indices.default
    if with_indices:
        _no_indices(r)
    y = Clip(ops.pool3d(x.t, "max", (k, _triple(stride, 0) if stride else k, _triple(padding))), 5)
    r.note("max_pool3d")
    return (y, None) if with_indices else y


@_on(aten.avg_pool3d.default)
def avg_pool3d(
    r: Any,
    x: Any,
    kernel: Any,
    stride: Any = (),
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: Any = None,
) -> Clip:
    _clip(x, 5)
    if ceil_mode or divisor_override is not None:
        msg = "ceil_mode or divisor_override in average pooling"
        raise ops.NotExact(msg)
    k = _triple(kernel)
    geometry = (k, _triple(stride) if stride else k, _triple(padding))
    r.note("avg_pool3d")
    return Clip(ops.pool3d(x.t, "avg", geometry, count_include_pad), 5)


@_on(aten.adaptive_avg_pool3d.default, aten.adaptive_max_pool3d.default)
def adaptive_pool3d(r: Any, x: Any, size: Any) -> Any:
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
    return tuple(int(n * s) for n, s in zip((t, h, w), sc, strict=True)), sc  # type: ignore[return-value]


@_on(aten.upsample_nearest3d.vec)
def upsample_nearest3d(r: Any, x: Any, size: Any, scales: Any) -> Clip:
    _clip(x, 5)
    out, sc = _out_size(x, size, scales)
    r.note("upsample3d-nearest")
    return Clip(ops.upsample3d(x.t, out, "nearest", scales=sc), 5)


@_on(aten.upsample_trilinear3d.vec)
def upsample_trilinear3d(r: Any, x: Any, size: Any, align_corners: bool, scales: Any) -> Clip:
    _clip(x, 5)
    out, sc = _out_size(x, size, scales)
    r.note("upsample3d-linear")
    return Clip(ops.upsample3d(x.t, out, "linear", bool(align_corners), sc), 5)


# --- axis-mapped ops ---------------------------------------------------------------------


def _reduce(fn: Callable[..., torch.Tensor], r: Any, x: Any, dim: Any, keepdim: bool) -> Clip:
    x = _clip(x)
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        msg = "a reduction over every axis"
        raise ops.NotExact(msg)
    dims = sorted({d % x.rank for d in ([dim] if isinstance(dim, int) else dim)})
    axes = tuple(x.axis(d) for d in dims)
    if keepdim:
        return Clip(fn(x.t, axes, keepdim=True), x.rank)
    if x.rank == 5 and dims == [3, 4]:
        return Clip(fn(x.t, axes, keepdim=True), 3)
    msg = f"a reduction over logical axes {dims} that drops them"
    raise ops.NotExact(msg)


@_on(aten.mean.dim)
def mean(r: Any, x: Any, dim: Any, keepdim: bool = False, dtype: Any = None) -> Clip:
    return _reduce(torch.mean, r, x, dim, keepdim)


@_on(aten.sum.dim_IntList)
def sum_(r: Any, x: Any, dim: Any, keepdim: bool = False, dtype: Any = None) -> Clip:
    return _reduce(torch.sum, r, x, dim, keepdim)


@_on(aten.amax.default)
def amax(r: Any, x: Any, dim: Any = (), keepdim: bool = False) -> Clip:
    return _reduce(torch.amax, r, x, dim, keepdim)


@_on(aten.cat.default)
def cat(r: Any, tensors: Any, dim: int = 0) -> Clip:
    clips = [_clip(t) for t in tensors]
    if len({c.rank for c in clips}) != 1:
        msg = "a concat of clips of different ranks"
        raise ops.NotExact(msg)
    return Clip(torch.cat([c.t for c in clips], clips[0].axis(dim)), clips[0].rank)


@_on(aten.slice.Tensor)
def slice_(r: Any, x: Any, dim: int = 0, start: Any = None, end: Any = None, step: int = 1) -> Clip:
    x = _clip(x)
    return Clip(aten.slice.Tensor(x.t, x.axis(dim), start, end, step), x.rank)


@_on(aten.constant_pad_nd.default)
def constant_pad(r: Any, x: Any, pad: Any, value: float = 0.0) -> Clip:
    x = _clip(x)
    pairs = {x.rank - 1 - i: (pad[2 * i], pad[2 * i + 1]) for i in range(len(pad) // 2)}
    phys = [0] * 8
    for d, (a, b) in pairs.items():
        axis = 3 - x.axis(d)  # F.pad lists the last physical axis first
        phys[2 * axis], phys[2 * axis + 1] = a, b
    return Clip(F.pad(x.t, phys, value=value), x.rank)


@_on(aten.diff.default)
def diff(
    r: Any, x: Any, n: int = 1, dim: int = -1, prepend: Any = None, append: Any = None
) -> Clip:
    x = _clip(x)
    extra = [_clip(p, x.rank).t if p is not None else None for p in (prepend, append)]
    r.note("diff-over-axis")
    return Clip(ops.diff(x.t, n, x.axis(dim), *extra), x.rank)


_VIEWS = (
    aten.view.default,
    aten.reshape.default,
    aten._unsafe_view.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.squeeze.default,
    aten.unsqueeze.default,
    aten.flatten.using_ints,
)


@_on(*_VIEWS)
def view(r: Any, x: Any, *rest: Any) -> torch.Tensor:
    x = _clip(x)
    if x.t.shape[1] != 1:
        msg = "a reshape of a multi-channel clip (it leaves the time-as-batch layout)"
        raise ops.NotExact(msg)
    shape = r.node.target(torch.empty(x.logical_shape(), device="meta"), *rest).shape
    return x.t.reshape(shape)  # one channel: logical and physical orders agree


@_on(aten.clone.default, aten.alias.default, aten.detach.default, aten._to_copy.default)
def same(r: Any, x: Any, *rest: Any, **kw: Any) -> Clip:
    x = _clip(x)
    return Clip(r.node.target(x.t, *rest, **kw), x.rank)


@_on(aten.dropout.default)
def dropout(r: Any, x: Any, p: float, train: bool) -> Clip:
    if train:
        msg = "dropout in training mode"
        raise ops.NotExact(msg)
    return _clip(x)


def _operand(a: Any, rank: int) -> Any:
    if isinstance(a, Clip):
        if a.rank != rank:
            msg = "an elementwise op on clips of different ranks"
            raise ops.NotExact(msg)
        return a.t
    if not isinstance(a, torch.Tensor) or a.dim() == 0:
        return a
    if a.dim() > rank:
        msg = "a broadcast operand of higher rank than the clip"
        raise ops.NotExact(msg)
    full = a.reshape((1,) * (rank - a.dim()) + tuple(a.shape))
    if full.shape[0] != 1:
        msg = "a broadcast operand with a batch axis"
        raise ops.NotExact(msg)
    phys = full[0].transpose(0, 1)
    return phys if rank == 5 else phys[..., None, None]


def pointwise(target: Any) -> Handler:
    """The handler of an elementwise op: operands mapped to time-as-batch, op unchanged."""

    def run(r: Any, *args: Any, **kwargs: Any) -> Clip:
        rank = next(a.rank for a in (*args, *kwargs.values()) if isinstance(a, Clip))
        a2 = [_operand(a, rank) for a in args]
        k2 = {k: _operand(v, rank) for k, v in kwargs.items()}
        return Clip(target(*a2, **k2), rank)

    return run
