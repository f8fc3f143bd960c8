"""Time-as-batch handlers of the ops that only move axes: reductions, concat, slices, pads,
``torch.diff``, reshapes, copies and every pointwise op (see :mod:`firmware_export.rewrite_3d`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from firmware_export import rewrite_3d_ops as ops
from firmware_export.rewrite_3d_handlers import HANDLERS, Handler, _args, _clip, _on
from firmware_export.rewrite_3d_ops import Clip

aten = torch.ops.aten

# --- axis-mapped ops ---------------------------------------------------------------------


def _reduce(fn: Callable[..., torch.Tensor], x: Any, dim: Any, keepdim: bool) -> Clip:
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


def _reduction(fn: Callable[..., torch.Tensor]) -> Handler:
    def run(r: Any, x: Any, dim: Any = None, keepdim: bool = False, *_: Any, **__: Any) -> Clip:
        return _reduce(fn, x, dim, keepdim)

    return run


HANDLERS[aten.mean.dim] = _reduction(torch.mean)
HANDLERS[aten.sum.dim_IntList] = _reduction(torch.sum)
HANDLERS[aten.amax.default] = _reduction(torch.amax)


@_on(aten.cat.default)
def _cat(r: Any, tensors: Any, dim: int = 0) -> Clip:
    """Concat of clips along a logical axis."""
    clips = [_clip(t) for t in tensors]
    if len({c.rank for c in clips}) != 1:
        msg = "a concat of clips of different ranks"
        raise ops.NotExact(msg)
    return Clip(torch.cat([c.t for c in clips], clips[0].axis(dim)), clips[0].rank)


@_on(aten.slice.Tensor)
def _slice(r: Any, x: Any, dim: int = 0, *rest: Any) -> Clip:
    """A slice along a logical axis: (start, end, step)."""
    x = _clip(x)
    return Clip(aten.slice.Tensor(x.t, x.axis(dim), *rest), x.rank)


@_on(aten.constant_pad_nd.default)
def _constant_pad(r: Any, x: Any, pad: Any, value: float = 0.0) -> Clip:
    """F.pad(mode="constant") with the pads moved to their physical axes."""
    x = _clip(x)
    phys = [0] * 8
    for i in range(len(pad) // 2):
        axis = 3 - x.axis(x.rank - 1 - i)  # F.pad lists the last physical axis first
        phys[2 * axis], phys[2 * axis + 1] = pad[2 * i], pad[2 * i + 1]
    return Clip(F.pad(x.t, phys, value=value), x.rank)


@_on(aten.pad.default)
def _pad(r: Any, x: Any, pad: Any, mode: str = "constant", value: Any = None) -> Clip:
    """F.pad: constant mode only."""
    if mode != "constant":
        msg = f"padding mode {mode!r}"
        raise ops.NotExact(msg)
    return _constant_pad(r, x, pad, 0.0 if value is None else value)


@_on(aten.diff.default)
def _diff(r: Any, x: Any, n: int = 1, dim: int = -1, *ends: Any) -> Clip:
    """torch.diff along a logical axis; prepend/append must be clips too."""
    x = _clip(x)
    extra = [_clip(p, x.rank).t if p is not None else None for p in _args(ends, (None, None))]
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
def _view(r: Any, x: Any, *rest: Any) -> torch.Tensor:
    """A reshape of a clip, which leaves time-as-batch: the logical tensor's row-major order is
    that of ``(C, T, H, W)``, one 4-D transpose of the clip (none for one channel).
    """
    clip = _clip(x)
    shape = tuple(r.node.meta["val"].shape)  # the traced output shape
    if clip.t.shape[1] == 1:
        return clip.t.reshape(shape)
    return clip.t.transpose(0, 1).reshape(shape)


@_on(aten.clone.default, aten.alias.default, aten.detach.default, aten._to_copy.default)
def _same(r: Any, x: Any, *rest: Any, **kw: Any) -> Clip:
    """Copies and dtype casts: the same op on the physical tensor."""
    x = _clip(x)
    return Clip(r.node.target(x.t, *rest, **kw), x.rank)


@_on(aten.dropout.default)
def _dropout(r: Any, x: Any, p: float, train: bool) -> Clip:
    """Eval-mode dropout: the identity."""
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
