"""Rank-5 slices, pads and concats over a unit leading axis, done in rank 4 (TFLM's limit).

TS-CAN's temporal shift views the frames as ``(n_batch, n_segment, C, H, W)``; exported with
batch 1 that view is rank 5 with a leading 1, and its slices (and the Slice/Pad/Concat that
:mod:`firmware_export.rewrite_onnx_ops` makes of its slice assignments) become rank-5
STRIDED_SLICE, PAD and CONCATENATION, which TFLite Micro refuses ("input dim should not exceed
4"). None of them touches the unit axis, so each is computed on the tensor without it:
``Reshape(drop axis 0) -> op on axes - 1 -> Reshape(back)``; chains of Reshapes then fuse, and a
Reshape to its own input's shape disappears, so the ``view(1, T, C, H, W) ... view(T, C, H, W)``
round trip leaves only rank-4 ops. Exact: only the index bookkeeping changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def lower_unit_rank5(onnx_model: Any) -> list[str]:
    """Apply the rewrite in place; return the names of the nodes computed in rank 4."""
    import onnx

    graph = onnx_model.graph
    shapes = static_shapes(onnx.shape_inference.infer_shapes(onnx_model).graph)
    consts = _consts(graph)
    if not _only_views(graph, shapes):
        return []
    new_nodes, done = [], []
    for node in graph.node:
        lowered = _lower(node, shapes, consts, graph)
        if lowered is None:
            new_nodes.append(node)
            continue
        new_nodes += lowered
        done.append(node.name or node.output[0])
    if not done:
        return []
    del graph.node[:]
    graph.node.extend(new_nodes)
    _fuse_reshapes(graph)
    return done


#: Ops that may write the rank-5 tensors of a graph whose rank 5 is only a view.
_VIEW_OPS = frozenset({"Reshape", "Slice", "Pad", "Concat", "Identity"})


def _only_views(graph: Any, shapes: dict[str, tuple[int, ...]]) -> bool:
    """True when no op but a reshape, slice, pad or concat writes a rank-5 tensor.

    A 3-D net computes on rank-5 tensors (Conv3d, or the Max/Add of the 3-D pooling rewrite):
    its slices stay as they are, because onnx2tf lays out 5-D <-> 4-D reshape chains around
    3-D ops wrongly.
    """
    return all(
        n.op_type in _VIEW_OPS for n in graph.node for o in n.output if len(shapes.get(o, ())) == 5
    )


def static_shapes(graph: Any) -> dict[str, tuple[int, ...]]:
    """Fully known shapes of a graph's inputs, value infos and outputs (after shape inference)."""
    out = {}
    for v in (*graph.input, *graph.value_info, *graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            out[v.name] = tuple(int(d.dim_value) for d in dims)
    return out


def _consts(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in graph.initializer}


def _unit5(shape: tuple[int, ...] | None) -> bool:
    return shape is not None and len(shape) == 5 and shape[0] == 1


def _lower(
    node: Any, shapes: dict[str, Any], consts: dict[str, Any], graph: Any
) -> list[Any] | None:
    data = [i for i in node.input[:1]] if node.op_type != "Concat" else list(node.input)
    if node.op_type not in ("Slice", "Pad", "Concat") or not data:
        return None
    if not all(_unit5(shapes.get(i)) for i in data) or not _unit5(shapes.get(node.output[0])):
        return None
    args = _rank4_args(node, consts)
    if args is None:
        return None
    from onnx import helper, numpy_helper

    base = node.name or node.output[0]
    out5 = shapes[node.output[0]]
    nodes = []
    inputs4 = []
    for k, name in enumerate(data):
        shape4 = np.array(shapes[name][1:], dtype=np.int64)
        s_name, r_name = f"{base}/rank4_shape_{k}", f"{base}/rank4_in_{k}"
        graph.initializer.append(numpy_helper.from_array(shape4, s_name))
        nodes.append(helper.make_node("Reshape", [name, s_name], [r_name], name=r_name))
        inputs4.append(r_name)
    extra_inputs, attrs = args
    for key, value in extra_inputs.items():
        graph.initializer.append(numpy_helper.from_array(value, f"{base}/rank4_{key}"))
    rest = [f"{base}/rank4_{key}" for key in extra_inputs]
    op4 = f"{base}/rank4_out"
    nodes.append(helper.make_node(node.op_type, inputs4 + rest, [op4], name=op4, **attrs))
    back = f"{base}/rank5_shape"
    graph.initializer.append(numpy_helper.from_array(np.array(out5, dtype=np.int64), back))
    nodes.append(helper.make_node("Reshape", [op4, back], [node.output[0]], name=f"{base}/rank5"))
    return nodes


def _rank4_args(
    node: Any, consts: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The op's constant inputs and attributes for rank 4, or None if axis 0 is involved."""
    if node.op_type == "Concat":
        axis = next(a.i for a in node.attribute if a.name == "axis") % 5
        return ({}, {"axis": axis - 1}) if axis != 0 else None
    if node.op_type == "Pad":
        pads = consts.get(node.input[1]) if len(node.input) > 1 else None
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
        if pads is None or pads[0] or pads[5] or len(node.input) > 3:
            return None
        extra = {"pads": np.delete(pads, [0, 5]).astype(np.int64)}
        if len(node.input) > 2 and node.input[2]:
            value = consts.get(node.input[2])
            if value is None:
                return None
            extra["value"] = value
        return extra, {"mode": mode.decode() if isinstance(mode, bytes) else mode}
    found = [consts.get(i) for i in node.input[1:]]
    ins: list[np.ndarray] = [v for v in found if v is not None]
    if len(ins) < 3 or len(ins) != len(found):
        return None
    axes = np.asarray(ins[2]) % 5
    if 0 in axes:
        return None
    extra = {"starts": ins[0], "ends": ins[1], "axes": (axes - 1).astype(np.int64)}
    if len(ins) > 3:
        extra["steps"] = ins[3]
    return extra, {}


def _fuse_reshapes(graph: Any) -> None:
    """Reshape of a Reshape reads the first one's input; drop Reshapes nobody reads and
    Reshapes to their own input's shape (a no-op).
    """
    import onnx

    producers = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        src = producers.get(node.input[0]) if node.op_type == "Reshape" else None
        while src is not None and src.op_type == "Reshape":
            node.input[0] = src.input[0]
            src = producers.get(node.input[0])
    _drop_dead(graph)
    model = onnx.helper.make_model(graph)
    shapes = static_shapes(onnx.shape_inference.infer_shapes(model).graph)
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    kept = []
    for node in graph.node:
        same = node.op_type == "Reshape" and shapes.get(node.input[0]) is not None
        if (
            same
            and shapes.get(node.input[0]) == shapes.get(node.output[0])
            and node.output[0] not in outputs
        ):
            rename[node.output[0]] = rename.get(node.input[0], node.input[0])
            continue
        kept.append(node)
    for node in kept:
        for k, name in enumerate(node.input):
            if name in rename:
                node.input[k] = rename[name]
    del graph.node[:]
    graph.node.extend(kept)
    _drop_dead(graph)
    del graph.value_info[:]  # stale shapes of removed tensors


def _drop_dead(graph: Any) -> None:
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        kept = [n for n in graph.node if any(o in used for o in n.output)]
        if len(kept) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(kept)
    used = {i for n in graph.node for i in n.input}
    inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)
