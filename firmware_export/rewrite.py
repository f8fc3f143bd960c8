"""Exact export-friendly rewrites, applied before conversion.

Each rewrite changes how a computation is expressed, never what it computes (tests prove
equality in float), so that the converter emits ops the targets have and quantization
behaves:

* 3-D pooling without padding -> the max (or mean) of strided 5-D slices, one per window
  offset (TFLite has no 3-D pooling builtin; slices keep the tensor 5-D, which onnx2tf lays out
  correctly, while chains of 5-D <-> 4-D reshapes come out of onnx2tf 1.28 scrambled);
* padded 3-D pooling -> 2-D pooling over frames + 2-D pooling over time via reshapes (max and
  average pooling are separable over a box window);
* an ``AdaptiveAvgPool3d`` that keeps the time axis and pools space to 1x1 -> a mean over H, W;
* the same replacements for the 3-D pooling calls of traced graphs (a loaded ``.pt2`` program),
  as calls of the replacement modules (:func:`rewrite_graph_pool3d_`).

With ``--rewrite-3d`` on (TFLM targets, and LiteRT when it rewrites every 3-D op) the whole
clip is run time-as-batch instead (:mod:`firmware_export.rewrite_3d`) and these do not apply.

Rewrites of the ONNX graph (for models that arrive as ``.onnx`` too) are in ``rewrite_onnx``.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


def _triple(v: int | tuple[int, ...]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else (int(v[0]), int(v[1]), int(v[2]))


class Pool3dAs2d(nn.Module):
    """A 3-D max/avg pool computed as a spatial 2-D pool per frame, then a temporal 2-D pool.

    Exact for max pooling (max is separable over a box) and for average pooling without
    ``divisor_override`` (the divisor of a box window is the product of per-axis counts).
    """

    def __init__(
        self, kind: str, kernel: Any, stride: Any, padding: Any, count_include_pad: bool = True
    ) -> None:
        super().__init__()
        self.kind = kind
        self.kernel, self.stride, self.padding = _triple(kernel), _triple(stride), _triple(padding)
        self.count_include_pad = count_include_pad

    def _pool(
        self, x: torch.Tensor, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int]
    ) -> torch.Tensor:
        if self.kind == "max":
            return F.max_pool2d(x, k, s, p)
        return F.avg_pool2d(x, k, s, p, count_include_pad=self.count_include_pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same result as the 3-D layer it replaces, with 2-D ops only."""
        b, c, t, h, w = x.shape
        (kt, kh, kw), (st, sh, sw), (pt, ph, pw) = self.kernel, self.stride, self.padding
        y = x.reshape(b, c * t, h, w)
        if (kh, kw) != (1, 1) or (ph, pw) != (0, 0) or (sh, sw) != (1, 1):
            y = self._pool(y, (kh, kw), (sh, sw), (ph, pw))
        h2, w2 = y.shape[-2], y.shape[-1]
        y = y.reshape(b, c, t, h2 * w2)
        if kt != 1 or pt != 0 or st != 1:
            y = self._pool(y, (kt, 1), (st, 1), (pt, 0))
        return y.reshape(b, c, y.shape[2], h2, w2)


class Pool3dAsSlices(nn.Module):
    """An unpadded 3-D max/avg pool as the elementwise max (or mean) of strided slices.

    Output element ``o`` of a window with offset ``j`` reads input ``o * stride + j``, so one
    strided slice per offset in the kernel covers every window at once: exact, and 5-D throughout.
    """

    def __init__(self, kind: str, kernel: Any, stride: Any) -> None:
        super().__init__()
        self.kind = kind
        self.kernel, self.stride = _triple(kernel), _triple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same result as the 3-D layer it replaces, with 2-D ops only."""
        sizes = x.shape[-3:]
        outs = [(n - k) // s + 1 for n, k, s in zip(sizes, self.kernel, self.stride, strict=True)]
        (kt, kh, kw), (st, sh, sw), (ot, oh, ow) = self.kernel, self.stride, outs

        def window(a: int, b: int, c: int) -> torch.Tensor:
            return x[
                :,
                :,
                a : a + st * (ot - 1) + 1 : st,
                b : b + sh * (oh - 1) + 1 : sh,
                c : c + sw * (ow - 1) + 1 : sw,
            ]

        offsets = list(itertools.product(range(kt), range(kh), range(kw)))
        acc = window(*offsets[0])
        for off in offsets[1:]:
            acc = torch.maximum(acc, window(*off)) if self.kind == "max" else acc + window(*off)
        return acc if self.kind == "max" else acc * (1.0 / (kt * kh * kw))


def _pool3d(
    kind: str, kernel: Any, stride: Any, padding: Any, count_include_pad: bool = True
) -> nn.Module:
    if _triple(padding) == (0, 0, 0):
        return Pool3dAsSlices(kind, kernel, stride)
    return Pool3dAs2d(kind, kernel, stride, padding, count_include_pad)


def _pool3d_replacement(m: nn.Module) -> nn.Module | None:
    if isinstance(m, nn.MaxPool3d):
        if m.ceil_mode or _triple(m.dilation) != (1, 1, 1) or m.return_indices:
            return None
        return _pool3d("max", m.kernel_size, m.stride or m.kernel_size, m.padding)
    if isinstance(m, nn.AvgPool3d):
        if m.ceil_mode or m.divisor_override is not None:
            return None
        return _pool3d(
            "avg", m.kernel_size, m.stride or m.kernel_size, m.padding, m.count_include_pad
        )
    return None


def rewrite_pool3d_(model: nn.Module) -> list[str]:
    """Replace ``MaxPool3d``/``AvgPool3d`` modules in place; return the names rewritten."""
    done = []
    for name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            new = _pool3d_replacement(child)
            if new is not None:
                setattr(parent, child_name, new)
                done.append(f"{name}.{child_name}" if name else child_name)
    if done:
        log.info("rewrote 3-D pooling as 2-D pooling: %s", ", ".join(done))
    return done


class AdaptiveAvgPool3dAs2d(nn.Module):
    """``AdaptiveAvgPool3d`` whose output size divides the input size, as separable 2-D pools."""

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same result as the 3-D layer it replaces, with 2-D ops only."""
        t, h, w = x.shape[-3:]
        out = [
            o if o is not None else i
            for o, i in zip(_triple(self.output_size), (t, h, w), strict=True)
        ]
        if out[0] == t and out[1:] == [1, 1]:
            return x.mean(dim=(3, 4), keepdim=True)
        k = tuple(i // o for i, o in zip((t, h, w), out, strict=True))
        pooled: torch.Tensor = Pool3dAsSlices("avg", k, k)(x)
        return pooled


def rewrite_adaptive_pool3d_(model: nn.Module, sample: torch.Tensor) -> list[str]:
    """Replace AdaptiveAvgPool3d layers whose windows are uniform for this input size."""
    sizes: dict[str, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(
            lambda mod, inp, out, n=n: sizes.__setitem__(n, tuple(inp[0].shape))
        )
        for n, m in model.named_modules()
        if isinstance(m, nn.AdaptiveAvgPool3d)
    ]
    with torch.no_grad():
        model(sample)
    for h in hooks:
        h.remove()
    done = []
    for name, shape in sizes.items():
        size = cast(nn.AdaptiveAvgPool3d, model.get_submodule(name)).output_size
        per_dim = (size,) * 3 if size is None or isinstance(size, int) else size  # None: keep
        out = tuple(i if o is None else o for o, i in zip(per_dim, shape[-3:], strict=True))
        if all(i % o == 0 for i, o in zip(shape[-3:], out, strict=True)):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, AdaptiveAvgPool3dAs2d(out))
            done.append(name)
    return done


_GRAPH_POOLS = (
    torch.ops.aten.max_pool3d.default,
    torch.ops.aten.avg_pool3d.default,
    torch.ops.aten.adaptive_avg_pool3d.default,
)


def _graph_pool_replacement(node: Any, shape: tuple[int, ...] | None) -> nn.Module | None:
    """The module replacing a 3-D pooling call of a traced graph (``.pt2``), or None."""
    aten = torch.ops.aten
    a = list(node.args) + [None] * 8
    if node.target is aten.max_pool3d.default:
        kernel, stride, padding, dilation, ceil = a[1], a[2] or a[1], a[3] or 0, a[4] or 1, a[5]
        if ceil or _triple(dilation) != (1, 1, 1):
            return None
        return _pool3d("max", kernel, stride, padding)
    if node.target is aten.avg_pool3d.default:
        kernel, stride, padding = a[1], a[2] or a[1], a[3] or 0
        ceil, include_pad, divisor = a[4], True if a[5] is None else a[5], a[6]
        if ceil or divisor is not None:
            return None
        return _pool3d("avg", kernel, stride, padding, include_pad)
    if node.target is aten.adaptive_avg_pool3d.default and shape is not None:
        out = _triple(a[1])
        if all(i % o == 0 for i, o in zip(shape[-3:], out, strict=True)):
            return AdaptiveAvgPool3dAs2d(out)
    return None


def rewrite_graph_pool3d_(model: nn.Module) -> list[str]:
    """:func:`rewrite_pool3d_` and :func:`rewrite_adaptive_pool3d_` for the traced graphs inside
    ``model`` (a loaded ``.pt2`` program is one): each 3-D pooling call becomes a call of the
    same replacement module, added to the graph module. Returns the module paths rewritten.
    """
    done = []
    for _, gm in list(model.named_modules()):
        if not isinstance(gm, torch.fx.GraphModule):
            continue
        changed = False
        for node in list(gm.graph.nodes):
            if node.op != "call_function" or node.target not in _GRAPH_POOLS:
                continue
            arg = node.args[0] if node.args else None
            val = arg.meta.get("val") if isinstance(arg, torch.fx.Node) else None
            shape = tuple(val.shape) if isinstance(val, torch.Tensor) else None
            new = _graph_pool_replacement(node, shape)
            if new is None:
                continue
            name = f"_rewritten_{node.name}"
            gm.add_submodule(name, new)
            with gm.graph.inserting_before(node):
                call = gm.graph.call_module(name, (node.args[0],))
            node.replace_all_uses_with(call)
            gm.graph.erase_node(node)
            stack = node.meta.get("nn_module_stack") or {}
            done.append((list(stack.values())[-1][0] if stack else "") or node.name)
            changed = True
        if changed:
            gm.recompile()
    if done:
        log.info("rewrote 3-D pooling of traced graphs as 2-D pooling: %s", ", ".join(done))
    return done
