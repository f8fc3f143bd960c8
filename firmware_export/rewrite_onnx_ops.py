"""ONNX rewrites for the ops of the field's rPPG nets (temporal shift, GELU, attention).

Run by :func:`firmware_export.rewrite_onnx.rewrite_onnx` on every graph, so they cover
PyTorch modules, ``.pt2`` programs (both exported through torch.onnx) and users' ``.onnx``
files alike:

* ``Constant`` nodes -> initializers (onnx2tf 1.28 turns a scalar ``Constant`` feeding a
  ``Mul``/``Div`` into a Python number and fails: "Output tensors of a Functional model must be
  the output of a TensorFlow Layer"; attention's ``/ sqrt(d)`` and ``InstanceNorm`` without
  affine parameters hit it);
* chains of ``ScatterND`` with constant box-shaped indices (in-place slice assignment such as
  TS-CAN's temporal shift, ``out = zeros_like(x); out[:, :-1, :f] = x[:, 1:, :f]; ...``) ->
  ``Slice`` + zero ``Pad`` + ``Concat`` (TFLite has no SCATTER_ND in TFLM and onnx2tf fails on
  it). Exact: every output element is copied from the same source element;
* ``Erf`` -> ``tanh(z (a + b z^2))`` with PyTorch's tanh-GELU constants (TFLM has neither ERF
  nor GELU). The only rewrite here that is not exact: ``|erf - approximation| <= 3.6e-4``
  everywhere (GELU: ``<= 4.8e-4``), far below one int8 step of any activation range;
* ``Elu`` -> ReLU + tanh / sigmoid form (:mod:`firmware_export.rewrite_onnx_elu`; exact);
* float ``ReduceSum`` -> ``ReduceMean`` x count (:mod:`firmware_export.rewrite_onnx_reduce`).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from firmware_export.rewrite_onnx_elu import rewrite_elu
from firmware_export.rewrite_onnx_rank import lower_unit_rank5, static_shapes
from firmware_export.rewrite_onnx_reduce import rewrite_reduce_sum

log = logging.getLogger(__name__)

#: erf(z) ~ tanh(z * (ERF_A + ERF_B * z^2)): PyTorch's GELU(approximate="tanh") written for erf.
ERF_A = 2.0 / math.sqrt(math.pi)
ERF_B = 0.044715 * 2.0 * math.sqrt(2.0) * math.sqrt(2.0 / math.pi)
#: Measured max |erf(z) - tanh(z (a + b z^2))| over z in [-6, 6] (step 6e-5); beyond, both are +-1.
ERF_MAX_ERROR = 3.6e-4


def rewrite_onnx_ops(model: Any) -> list[str]:
    """Apply this module's rewrites in place; return a description of each change."""
    n_const = constants_to_initializers(model)
    done = [f"constants-as-initializers:{n_const}"] if n_const else []
    done += [f"scatternd-slice-concat:{n}" for n in rewrite_scatter_nd(model)]
    lowered = lower_unit_rank5(model)
    done += [f"rank5-unit-axis-as-rank4:{len(lowered)}"] if lowered else []
    done += [f"erf-tanh:{n}" for n in rewrite_erf(model)]
    done += [f"elu-tanh-div:{n}" for n in rewrite_elu(model)]
    done += [f"sum-as-mean-times-count:{n}" for n in rewrite_reduce_sum(model)]
    return done


def constants_to_initializers(onnx_model: Any) -> int:
    """Move tensor-valued ``Constant`` nodes into initializers; return how many moved."""
    from onnx import numpy_helper

    graph = onnx_model.graph
    outputs = {o.name for o in graph.output}
    kept, moved = [], 0
    for node in graph.node:
        value = _constant_value(node)
        if value is None or node.output[0] in outputs:
            kept.append(node)
            continue
        graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        moved += 1
    if moved:
        del graph.node[:]
        graph.node.extend(kept)
    return moved


def _constant_value(node: Any) -> np.ndarray | None:
    from onnx import numpy_helper

    if node.op_type != "Constant" or len(node.attribute) != 1:
        return None
    a = node.attribute[0]
    if a.name == "value":
        return numpy_helper.to_array(a.t)
    if a.name == "value_float":
        return np.array(a.f, dtype=np.float32)
    if a.name == "value_floats":
        return np.array(list(a.floats), dtype=np.float32)
    if a.name == "value_int":
        return np.array(a.i, dtype=np.int64)
    if a.name == "value_ints":
        return np.array(list(a.ints), dtype=np.int64)
    return None


# --- ScatterND with box indices -> Slice / Pad / Concat ------------------------------------

_RESULT = "/ScatterNDResult"  # the Identity that stands for a rewritten chain until folded


@dataclass(frozen=True)
class _Write:
    """One ScatterND of a chain: ``box`` (start, stop) per axis gets ``source``."""

    box: tuple[tuple[int, int], ...]
    source: str  # a tensor of exactly the box's shape


@dataclass(frozen=True)
class _Piece:
    """A region of the output: a block of ``source`` at ``offset`` (None: zeros)."""

    shape: tuple[int, ...]
    source: str | None
    offset: tuple[int, ...] = ()


def _box(indices: np.ndarray, shape: tuple[int, ...]) -> tuple[tuple[int, int], ...] | None:
    """The box (start, stop per axis) that ScatterND indices enumerate in C order, or None."""
    if indices.ndim < 1 or indices.size == 0 or not 0 < indices.shape[-1] <= len(shape):
        return None
    k = indices.shape[-1]
    flat = indices.reshape(-1, k).astype(np.int64) % np.array(shape[:k], dtype=np.int64)
    lo, hi = flat.min(axis=0), flat.max(axis=0) + 1
    grid = np.stack(
        np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij"), -1
    ).reshape(-1, k)
    if grid.shape != flat.shape or not np.array_equal(grid, flat):
        return None
    full = [(0, n) for n in shape[k:]]
    return tuple((int(a), int(b)) for a, b in zip(lo, hi, strict=True)) + tuple(full)


class _Builder:
    """Emits the nodes and initializers that assemble a ScatterND chain's output."""

    def __init__(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.name, self.shape, self.dtype = name, shape, dtype
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def _fresh(self, what: str) -> str:
        return f"{self.name}/{what}_{len(self.nodes) + len(self.inits)}"

    def const(self, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self._fresh("const")
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        from onnx import helper

        out = self._fresh(op)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def materialise(self, piece: _Piece, source_shapes: dict[str, tuple[int, ...]]) -> str:
        """A tensor name holding ``piece`` (a Slice of its source, or zeros)."""
        if piece.source is None:
            return self.const(np.zeros(piece.shape, dtype=self.dtype))
        full = source_shapes[piece.source]
        if piece.shape == full:
            return piece.source
        axes = [a for a in range(len(full)) if piece.shape[a] != full[a]]
        starts = [piece.offset[a] for a in axes]
        ends = [piece.offset[a] + piece.shape[a] for a in axes]
        ints = [self.const(np.array(v, dtype=np.int64)) for v in (starts, ends, axes)]
        return self.node("Slice", [piece.source, *ints])

    def join(self, axis: int, parts: list[_Piece], sources: dict[str, tuple[int, ...]]) -> _Piece:
        """Concatenate pieces along ``axis`` (zeros at the ends become a zero Pad)."""
        real = [i for i, p in enumerate(parts) if p.source is not None]
        if len(real) == 1 and all(p.source is None for i, p in enumerate(parts) if i != real[0]):
            middle = parts[real[0]]
            before = sum(p.shape[axis] for p in parts[: real[0]])
            after = sum(p.shape[axis] for p in parts[real[0] + 1 :])
            pads = [0] * (2 * len(middle.shape))
            pads[axis], pads[len(middle.shape) + axis] = before, after
            tensor = self.materialise(middle, sources)
            pad_name = self.const(np.array(pads, dtype=np.int64))
            out = self.node("Pad", [tensor, pad_name], mode="constant")
        else:
            names = [self.materialise(p, sources) for p in parts]
            out = self.node("Concat", names, axis=axis)
        shape = list(parts[0].shape)
        shape[axis] = sum(p.shape[axis] for p in parts)
        sources[out] = tuple(shape)
        return _Piece(tuple(shape), out, (0,) * len(shape))


def _merge(axis: int, parts: list[_Piece]) -> list[_Piece]:
    """Fuse neighbours along ``axis`` that are contiguous blocks of one source (or both zero)."""
    merged: list[_Piece] = []
    for p in parts:
        if merged and _adjacent(merged[-1], p, axis):
            q = merged[-1]
            shape = list(q.shape)
            shape[axis] += p.shape[axis]
            merged[-1] = _Piece(tuple(shape), q.source, q.offset)
        else:
            merged.append(p)
    return merged


def _adjacent(q: _Piece, p: _Piece, axis: int) -> bool:
    if q.source != p.source:
        return False
    if q.source is None:
        return True
    others = [a for a in range(len(q.shape)) if a != axis]
    return all(q.offset[a] == p.offset[a] and q.shape[a] == p.shape[a] for a in others) and (
        q.offset[axis] + q.shape[axis] == p.offset[axis]
    )


def _assemble(
    order: tuple[int, ...],
    cuts: dict[int, list[int]],
    cell_piece: Callable[[tuple[tuple[int, int], ...]], _Piece],
    builder: _Builder,
    sources: dict[str, tuple[int, ...]],
) -> _Piece:
    """Nest Concats over the cut grid, outer axis first; leaves come from ``cell_piece``."""

    def build(level: int, region: tuple[tuple[int, int], ...]) -> _Piece:
        if level == len(order):
            return cell_piece(region)
        axis = order[level]
        edges = cuts[axis]
        parts = []
        for a, b in itertools.pairwise(edges):
            sub = list(region)
            sub[axis] = (a, b)
            parts.append(build(level + 1, tuple(sub)))
        parts = _merge(axis, parts)
        return parts[0] if len(parts) == 1 else builder.join(axis, parts, sources)

    return build(0, tuple((0, n) for n in builder.shape))


def _chain_plan(
    base: str,
    base_value: np.ndarray | None,
    writes: list[_Write],
    builder: _Builder,
    sources: dict[str, tuple[int, ...]],
) -> str:
    """Emit the assembly of ``base`` overwritten by ``writes``; return the result tensor."""
    shape = builder.shape
    axes = [a for a in range(len(shape)) if any(w.box[a] != (0, shape[a]) for w in writes)]
    cuts = {
        a: sorted({0, shape[a], *(e for w in writes for e in w.box[a])}) for a in range(len(shape))
    }
    cuts = {a: (c if a in axes else [0, shape[a]]) for a, c in cuts.items()}
    zero_base = base_value is not None and not np.any(base_value)
    if base_value is not None and not zero_base:
        base = builder.const(base_value)
        sources[base] = shape

    def cell_piece(region: tuple[tuple[int, int], ...]) -> _Piece:
        size = tuple(b - a for a, b in region)
        for w in reversed(writes):
            if all(wa <= a and b <= wb for (a, b), (wa, wb) in zip(region, w.box, strict=True)):
                off = tuple(a - wa for (a, _), (wa, _) in zip(region, w.box, strict=True))
                return _Piece(size, w.source, off)
        if zero_base:
            return _Piece(size, None)
        return _Piece(size, base, tuple(a for a, _ in region))

    best: tuple[list[Any], list[Any], str] | None = None
    for order in itertools.permutations(axes):
        trial = _Builder(builder.name, shape, builder.dtype)
        trial_sources = dict(sources)
        piece = _assemble(order, cuts, cell_piece, trial, trial_sources)
        out = trial.materialise(piece, trial_sources)
        if best is None or len(trial.nodes) < len(best[0]):
            best = (trial.nodes, trial.inits, out)
    assert best is not None  # at least one ScatterND writes a strict sub-box
    builder.nodes, builder.inits = best[0], best[1]
    return best[2]


def rewrite_scatter_nd(onnx_model: Any) -> list[str]:
    """Chains of ScatterND with constant box indices -> Slice/Pad/Concat; return their names.

    A chain is ScatterND nodes each writing into the previous one's output (used nowhere
    else), as ``torch.onnx`` exports successive in-place slice assignments.
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = onnx_model.graph
    if not any(n.op_type == "ScatterND" for n in graph.node):
        return []
    constants_to_initializers(onnx_model)
    shapes = _shapes(onnx.shape_inference.infer_shapes(onnx_model).graph)
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    users: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    producers = {o: n for n in graph.node for o in n.output}
    graph_outputs = {o.name for o in graph.output}
    done, drop, insert_after = [], set(), {}
    for last in graph.node:
        chain = _scatter_chain(last, producers, users, graph_outputs, consts, shapes)
        if chain is None or id(last) in drop:
            continue
        nodes, writes = chain
        first = nodes[0]
        shape = shapes[last.output[0]]
        dtype = _dtype(graph, first.input[0], consts)
        builder = _Builder(last.name or last.output[0], shape, dtype)
        sources = {w.source: tuple(b - a for a, b in w.box) for w in writes}
        sources[first.input[0]] = shape
        result = _chain_plan(first.input[0], consts.get(first.input[0]), writes, builder, sources)
        builder.nodes.append(helper.make_node("Identity", [result], [last.output[0]]))
        builder.nodes[-1].name = f"{builder.name}{_RESULT}"
        graph.initializer.extend(builder.inits)
        insert_after[id(last)] = builder.nodes
        drop |= {id(n) for n in nodes}
        done.append(builder.name)
    if not done:
        return []
    new_nodes = []
    for n in graph.node:
        new_nodes += insert_after.get(id(n), []) if id(n) in drop else [n]
    del graph.node[:]
    graph.node.extend(new_nodes)
    _drop_unused_initializers(graph)
    _fold_identities(graph)
    return done


def _scatter_chain(
    last: Any,
    producers: dict[str, Any],
    users: dict[str, list[Any]],
    graph_outputs: set[str],
    consts: dict[str, np.ndarray],
    shapes: dict[str, tuple[int, ...]],
) -> tuple[list[Any], list[_Write]] | None:
    """The chain of box ScatterNDs ending at ``last`` (which no ScatterND continues), or None."""
    if last.op_type != "ScatterND" or any(
        u.op_type == "ScatterND" and u.input[0] == last.output[0]
        for u in users.get(last.output[0], [])
    ):
        return None
    nodes = [last]
    while True:
        src = producers.get(nodes[0].input[0])
        if (
            src is None
            or src.op_type != "ScatterND"
            or len(users.get(src.output[0], [])) != 1
            or src.output[0] in graph_outputs
        ):
            break
        nodes.insert(0, src)
    shape = shapes.get(last.output[0])
    if shape is None:
        return None
    writes = []
    for n in nodes:
        reduction = next((a.s for a in n.attribute if a.name == "reduction"), b"none")
        indices = consts.get(n.input[1])
        if reduction not in (b"none", "none") or indices is None:
            return None
        box = _box(indices, shape)
        if box is None or shapes.get(n.input[2]) != tuple(b - a for a, b in box):
            return None  # (updates laid out differently from the box would need a Reshape)
        writes.append(_Write(box, n.input[2]))
    return nodes, writes


def _shapes(graph: Any) -> dict[str, tuple[int, ...]]:
    """:func:`static_shapes` plus the initializers' shapes."""
    out = static_shapes(graph)
    for init in graph.initializer:
        out[init.name] = tuple(int(d) for d in init.dims)
    return out


def _dtype(graph: Any, name: str, consts: dict[str, np.ndarray]) -> np.dtype:
    from onnx import helper

    if name in consts:
        return consts[name].dtype
    for v in (*graph.input, *graph.value_info):
        if v.name == name:
            return np.dtype(helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type))
    return np.dtype(np.float32)


def _drop_unused_initializers(graph: Any) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [init for init in graph.initializer if init.name in used]
    if len(kept) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)


def _fold_identities(graph: Any) -> None:
    """Drop the Identity nodes added above when their output is not a graph output."""
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    kept = []
    for n in graph.node:
        if n.op_type == "Identity" and n.name.endswith(_RESULT) and n.output[0] not in outputs:
            rename[n.output[0]] = rename.get(n.input[0], n.input[0])
            continue
        kept.append(n)
    for n in kept:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    del graph.node[:]
    graph.node.extend(kept)


# --- Erf -> tanh --------------------------------------------------------------------------


def rewrite_erf(onnx_model: Any) -> list[str]:
    """``Erf(z)`` -> ``Tanh(z * (a + b * z * z))``; return the names of the rewritten nodes."""
    from onnx import helper, numpy_helper

    graph = onnx_model.graph
    new_nodes, done = [], []
    for node in graph.node:
        if node.op_type != "Erf":
            new_nodes.append(node)
            continue
        base = node.name or node.output[0]
        z = node.input[0]
        a_name, b_name = f"{base}/erf_a", f"{base}/erf_b"
        for name, v in ((a_name, ERF_A), (b_name, ERF_B)):
            graph.initializer.append(numpy_helper.from_array(np.array(v, dtype=np.float32), name))
        sq, cubic, inner, arg = (f"{base}/{s}" for s in ("z2", "bz2", "a_bz2", "arg"))
        new_nodes += [
            helper.make_node("Mul", [z, z], [sq], name=sq),
            helper.make_node("Mul", [sq, b_name], [cubic], name=cubic),
            helper.make_node("Add", [cubic, a_name], [inner], name=inner),
            helper.make_node("Mul", [z, inner], [arg], name=arg),
            helper.make_node("Tanh", [arg], [node.output[0]], name=f"{base}/Tanh"),
        ]
        done.append(base)
    del graph.node[:]
    graph.node.extend(new_nodes)
    return done
