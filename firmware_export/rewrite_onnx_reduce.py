"""A float ``ReduceSum`` over static axes as ``ReduceMean`` times the element count.

DeepPhys, TS-CAN and EfficientPhys normalise their attention masks by their own sum
(``x / sum_HW(x) * H * W / 2``). In int8, TFLite Micro's SUM and LiteRT's reference SUM
requantize differently (12-25 LSB apart on those masks), so the TFLM model cannot be checked
bit for bit; their MEAN kernels agree. ``sum = mean * count`` is exact in float (the count is
a constant for a static shape), so the rewrite costs one MUL and makes the comparison exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def rewrite_reduce_sum(onnx_model: Any) -> list[str]:
    """Replace float ``ReduceSum`` nodes with constant axes; return their names."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = onnx_model.graph
    if not any(n.op_type == "ReduceSum" for n in graph.node):
        return []
    inferred = onnx.shape_inference.infer_shapes(onnx_model).graph
    infos = {v.name: v.type.tensor_type for v in (*inferred.input, *inferred.value_info)}
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    new_nodes, done = [], []
    for node in graph.node:
        count = _count(node, infos, consts, TensorProto.FLOAT)
        if count is None:
            new_nodes.append(node)
            continue
        axes = [int(a) for a in np.atleast_1d(consts[node.input[1]])]
        keep = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
        base = node.name or node.output[0]
        mean, n_name = f"{base}/mean", f"{base}/count"
        graph.initializer.append(numpy_helper.from_array(np.array(count, np.float32), n_name))
        new_nodes += [
            helper.make_node(
                "ReduceMean", [node.input[0]], [mean], name=mean, axes=axes, keepdims=keep
            ),
            helper.make_node("Mul", [mean, n_name], [node.output[0]], name=f"{base}/times_count"),
        ]
        done.append(base)
    if done:
        del graph.node[:]
        graph.node.extend(new_nodes)
    return done


def _count(node: Any, infos: dict[str, Any], consts: dict[str, Any], float_type: int) -> int | None:
    """Elements summed per output element, or None when the node is not rewritten."""
    if node.op_type != "ReduceSum" or len(node.input) < 2 or node.input[1] not in consts:
        return None
    if any(a.name == "noop_with_empty_axes" and a.i for a in node.attribute):
        return None
    info = infos.get(node.input[0])
    if info is None or info.elem_type != float_type:
        return None
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in info.shape.dim]
    axes = [int(a) % len(dims) for a in np.atleast_1d(consts[node.input[1]])] if dims else []
    if not axes or any(dims[a] <= 0 for a in axes):
        return None
    return int(np.prod([dims[a] for a in axes]))
