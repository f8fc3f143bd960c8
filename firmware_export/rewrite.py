"""Exact export-friendly rewrites, applied before conversion.

Each rewrite changes how a computation is expressed, never what it computes (tests prove
equality in float), so that the converter emits ops the targets have and quantization
behaves:

* 3-D pooling -> 2-D pooling over frames + 2-D pooling over time (TFLite has no 3-D pooling
  builtin; max and average pooling are separable over a box window).

Rewrites of the ONNX graph (for models that arrive as ``.onnx`` too) are in ``rewrite_onnx``.
"""

from __future__ import annotations

import logging
from typing import Any

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

    def __init__(self, kind: str, kernel: Any, stride: Any, padding: Any,
                 count_include_pad: bool = True) -> None:
        super().__init__()
        self.kind = kind
        self.kernel, self.stride, self.padding = _triple(kernel), _triple(stride), _triple(padding)
        self.count_include_pad = count_include_pad

    def _pool(self, x: torch.Tensor, k: tuple[int, int], s: tuple[int, int],
              p: tuple[int, int]) -> torch.Tensor:
        if self.kind == "max":
            return F.max_pool2d(x, k, s, p)
        return F.avg_pool2d(x, k, s, p, count_include_pad=self.count_include_pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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


def _pool3d_replacement(m: nn.Module) -> nn.Module | None:
    if isinstance(m, nn.MaxPool3d):
        if m.ceil_mode or _triple(m.dilation) != (1, 1, 1) or m.return_indices:
            return None
        return Pool3dAs2d("max", m.kernel_size, m.stride, m.padding)
    if isinstance(m, nn.AvgPool3d):
        if m.ceil_mode or m.divisor_override is not None:
            return None
        return Pool3dAs2d("avg", m.kernel_size, m.stride, m.padding, m.count_include_pad)
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
        t, h, w = x.shape[-3:]
        out = [o if o is not None else i for o, i in zip(_triple(self.output_size), (t, h, w), strict=True)]
        k = tuple(i // o for i, o in zip((t, h, w), out, strict=True))
        return Pool3dAs2d("avg", k, k, 0)(x)


def rewrite_adaptive_pool3d_(model: nn.Module, sample: torch.Tensor) -> list[str]:
    """Replace AdaptiveAvgPool3d layers whose windows are uniform for this input size."""
    sizes: dict[str, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, n=n: sizes.__setitem__(n, tuple(inp[0].shape)))
        for n, m in model.named_modules() if isinstance(m, nn.AdaptiveAvgPool3d)
    ]
    with torch.no_grad():
        model(sample)
    for h in hooks:
        h.remove()
    done = []
    for name, shape in sizes.items():
        m = model.get_submodule(name)
        out = _triple(m.output_size) if not isinstance(m.output_size, int) else _triple(m.output_size)
        out = tuple(o if o is not None else i for o, i in zip(out, shape[-3:], strict=True))
        if all(i % o == 0 for i, o in zip(shape[-3:], out, strict=True)):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, AdaptiveAvgPool3dAs2d(out))
            done.append(name)
    return done
