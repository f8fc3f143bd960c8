"""Torch-level export rewrites for the field's rPPG nets, for modules and ``.pt2`` programs.

* ``torch.diff`` (EfficientPhys and iBVPNet take frame differences with it) has no ONNX
  symbolic at opset 17; :func:`export_symbolics` registers one for the duration of an export
  that writes the difference with ``Slice`` and ``Sub`` (``prepend``/``append`` as a ``Concat``
  first), exactly what ``torch.diff`` computes. It sees every ``aten::diff`` of the traced
  graph, so it covers modules and ``.pt2`` programs alike, wherever the call sits.
* In-place slice assignment inside a ``.pt2`` program (``aten.copy_`` into a slice view, TS-CAN's
  temporal shift) traces to a constant in torch.onnx (the input is silently dropped).
  :func:`functionalize_programs_` re-exports such graphs functionally (``slice_scatter``), and
  the symbolics write ``slice_scatter`` as ``Slice`` + ``Concat`` and the functional ``copy`` as
  its source: exact. (In an ``nn.Module`` the same code exports as ``ScatterND``, which
  :mod:`firmware_export.rewrite_onnx_ops` rewrites.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

_INT64_MAX = 2**63 - 1


def _diff_symbolic(applied: list[str]) -> Any:
    """The ``aten::diff`` symbolic; appends a description of each call to ``applied``."""
    import torch
    from torch.onnx import symbolic_helper as sh

    def diff(g: Any, x: Any, n: Any, dim: Any, prepend: Any, append: Any) -> Any:
        steps = sh._get_const(n, "i", "n")
        axis = sh._get_const(dim, "i", "dim")
        rank = sh._get_tensor_rank(x)
        if axis < 0:
            if rank is None:
                return sh._unimplemented("diff", "a negative dim on a tensor of unknown rank", x)
            axis += rank
        parts = [t for t in (prepend, x, append) if t is x or not sh._is_none(t)]
        y = x if len(parts) == 1 else g.op("Concat", *parts, axis_i=axis)

        def const(v: int) -> Any:
            return g.op("Constant", value_t=torch.tensor([v], dtype=torch.int64))

        for _ in range(steps):
            later = g.op("Slice", y, const(1), const(_INT64_MAX), const(axis))
            earlier = g.op("Slice", y, const(0), const(-1), const(axis))
            y = g.op("Sub", later, earlier)
        applied.append(f"diff-slice-sub:n={steps},dim={axis}")
        return y

    return diff


def _slice_scatter_symbolic(applied: list[str]) -> Any:
    """``aten::slice_scatter(base, src, dim, start, end, step)`` -> Concat(base slices, src)."""
    import torch
    from torch.onnx import symbolic_helper as sh

    def slice_scatter(
        g: Any, base: Any, src: Any, dim: Any, start: Any, end: Any, step: Any
    ) -> Any:
        sizes = sh._get_tensor_sizes(base)
        axis = sh._get_const(dim, "i", "dim")
        if sizes is None or any(s is None for s in sizes) or sh._get_const(step, "i", "step") != 1:
            why = "a dynamic shape or a step other than 1"
            return sh._unimplemented("slice_scatter", why, base)
        axis %= len(sizes)
        n = sizes[axis]
        lo = 0 if sh._is_none(start) else sh._get_const(start, "i", "start")
        hi = n if sh._is_none(end) else sh._get_const(end, "i", "end")
        lo, hi = (min(max(v + n if v < 0 else v, 0), n) for v in (lo, hi))

        def part(a: int, b: int) -> Any:
            ints = [g.op("Constant", value_t=torch.tensor([v])) for v in (a, b, axis)]
            return g.op("Slice", base, *ints)

        parts = ([part(0, lo)] if lo > 0 else []) + [src] + ([part(hi, n)] if hi < n else [])
        applied.append(f"slice-scatter-concat:dim={axis}")
        return parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis_i=axis)

    return slice_scatter


def _copy_symbolic(g: Any, dst: Any, src: Any, non_blocking: Any) -> Any:
    """Functional ``aten::copy(dst, src)``: ``src`` broadcast to ``dst``'s shape and type."""
    from torch.onnx import symbolic_helper as sh

    dst_sizes, src_sizes = sh._get_tensor_sizes(dst), sh._get_tensor_sizes(src)
    out = src
    if dst_sizes is None or dst_sizes != src_sizes:
        out = g.op("Expand", src, g.op("Shape", dst))
    dtype = dst.type().scalarType()
    if dtype is not None and dtype != src.type().scalarType():
        out = g.op("Cast", out, to_i=sh._type_utils.JitScalarType.from_value(dst).onnx_type())
    return out


def _bn_no_training_symbolic(
    g: Any, x: Any, weight: Any, bias: Any, mean: Any, var: Any, momentum: Any, eps: Any
) -> Any:
    """``aten::_native_batch_norm_legit_no_training`` (a functionalized ``.pt2``'s eval-mode
    BatchNorm) as ONNX ``BatchNormalization``; its two statistics outputs are never read.
    """
    import torch
    from torch.onnx import symbolic_helper as sh

    channels = sh._get_tensor_sizes(mean)[0]
    if sh._is_none(weight):
        weight = g.op("Constant", value_t=torch.ones(channels))
    if sh._is_none(bias):
        bias = g.op("Constant", value_t=torch.zeros(channels))
    eps_f = sh._get_const(eps, "f", "eps")
    out = g.op("BatchNormalization", x, weight, bias, mean, var, epsilon_f=eps_f)
    return out, mean, var


_SYMBOLICS = (
    "aten::diff",
    "aten::slice_scatter",
    "aten::copy",
    "aten::_native_batch_norm_legit_no_training",
)


@contextlib.contextmanager
def export_symbolics(opset: int) -> Iterator[list[str]]:
    """Register the symbolics above for ``opset`` while the block runs.

    Yields:
        The list the symbolics append the rewrites they applied to.
    """
    import torch

    applied: list[str] = []
    functions = (
        _diff_symbolic(applied),
        _slice_scatter_symbolic(applied),
        _copy_symbolic,
        _bn_no_training_symbolic,
    )
    for name, fn in zip(_SYMBOLICS, functions, strict=True):
        torch.onnx.register_custom_op_symbolic(name, fn, opset)
    try:
        yield applied
    finally:
        for name in _SYMBOLICS:
            torch.onnx.unregister_custom_op_symbolic(name, opset)


def _mutates(gm: Any) -> bool:
    return any(
        n.op == "call_function" and getattr(getattr(n.target, "_schema", None), "is_mutable", False)
        for n in gm.graph.nodes
    )


def functionalize_programs_(model: Any, sample: Any) -> list[str]:
    """Re-export, without mutation, every ``torch.fx.GraphModule`` inside ``model`` that mutates
    tensors in place (``aten.copy_`` into views); return the names of the graphs rewritten.

    The graphs of ``.pt2`` programs are such GraphModules; the functional re-export computes
    the same values (``torch.export``'s functionalization) with ``slice_scatter`` instead.
    """
    import torch

    inputs: dict[str, tuple[Any, ...]] = {}
    graphs = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, torch.fx.GraphModule) and _mutates(m)
    ]
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, n=name: inputs.setdefault(n, args))
        for name, m in graphs
    ]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for h in hooks:
            h.remove()
    done = []
    for name, m in graphs:
        if name not in inputs:
            continue
        program = torch.export.export(m, inputs[name]).run_decompositions({})
        functional = program.module()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if not child:  # the model itself is the graph: its caller keeps the reference
            continue
        setattr(parent, child, functional)
        done.append(f"functionalized:{name}")
    return done
