"""ONNX rewrites for LiteRT targets: int8 ops XNNPACK runs instead of ones it leaves behind.

LiteRT runs an int8 model with XNNPACK, which takes most int8 builtins but not
``AVERAGE_POOL_2D`` or ``DIV`` (XNNPACK has both in float only). Each such op runs on the
builtin kernels and splits the graph into several delegate partitions; on a pruned TS-CAN the
two mask ``DIV`` s and three average pools took a quarter of the int8 inference time
(``bench/xnnpack_int8.py``). Both rewrites keep what the graph computes in float:

* an unpadded ``AveragePool`` -> a depthwise ``Conv`` with every weight ``1 / (kh * kw)``
  (int8: the per-channel weight scale makes each weight exactly 127 steps; one requantization
  instead of the pool's rounding, and a few MACs per output);
* ``Div(a, b)`` whose ``b`` broadcasts over many more elements of ``a`` (a per-sample or
  per-channel normaliser, e.g. DeepPhys' attention mask ``g / (2 * mean g)``) ->
  ``Mul(a, Div(1, b))``: the ``DIV`` left on the builtin kernels runs on ``b`` 's few
  elements. In int8 the reciprocal takes its own scale (one more rounding, checked by the
  export's verification like every other step).

TFLite Micro targets do not get them: their ``AVERAGE_POOL_2D`` is cheaper than a depthwise
convolution, and the reports' bit-exactness figures are those of the unrewritten graphs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from firmware_export.rewrite_onnx_rank import static_shapes

#: ``Div(a, b)`` is rewritten when ``a`` has at least this many times ``b`` 's elements.
MIN_BROADCAST = 16


def rewrite_for_litert(onnx_model: Any) -> list[str]:
    """Apply both rewrites in place; return a description of each change."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(onnx_model).graph
    shapes = static_shapes(inferred)
    done = [f"avgpool-depthwise-conv:{n}" for n in _avgpool_as_conv(onnx_model, shapes)]
    floats = {
        v.name: s
        for v in inferred.value_info
        if (s := shapes.get(v.name)) is not None
        and v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    }
    done += [f"div-as-mul-reciprocal:{n}" for n in _div_as_reciprocal(onnx_model, floats)]
    return done


def _ints(node: Any, name: str, default: list[int]) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == name), default)


def _avgpool_as_conv(onnx_model: Any, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    from onnx import helper, numpy_helper

    graph, done, new_nodes = onnx_model.graph, [], []
    for node in graph.node:
        shape = shapes.get(node.input[0]) if node.input else None
        kernel = _ints(node, "kernel_shape", [])
        ceil = next((a.i for a in node.attribute if a.name == "ceil_mode"), 0)
        if (
            node.op_type != "AveragePool"
            or shape is None
            or len(shape) != 4
            or len(kernel) != 2
            or any(_ints(node, "pads", []))
            or any(d != 1 for d in _ints(node, "dilations", []))
            or ceil
            or _auto_pad(node)
        ):
            new_nodes.append(node)
            continue
        name = node.name or node.output[0]
        weight = np.full((shape[1], 1, *kernel), 1.0 / math.prod(kernel), dtype=np.float32)
        graph.initializer.append(numpy_helper.from_array(weight, f"{name}_mean_weight"))
        new_nodes.append(
            helper.make_node(
                "Conv",
                [node.input[0], f"{name}_mean_weight"],
                list(node.output),
                name=f"{name}_as_depthwise_conv",
                group=shape[1],
                kernel_shape=kernel,
                strides=_ints(node, "strides", [1, 1]),
            )
        )
        done.append(name)
    if done:
        del graph.node[:]
        graph.node.extend(new_nodes)
    return done


def _auto_pad(node: Any) -> bool:
    mode = next((a.s for a in node.attribute if a.name == "auto_pad"), b"NOTSET")
    return mode not in (b"NOTSET", b"VALID")


def _div_as_reciprocal(onnx_model: Any, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    from onnx import helper, numpy_helper

    graph, done, new_nodes = onnx_model.graph, [], []
    constants = {i.name for i in graph.initializer}
    for node in graph.node:
        if node.op_type != "Div" or not _broadcast_divisor(node, shapes, constants):
            new_nodes.append(node)
            continue
        name = node.name or node.output[0]
        one, recip = f"{name}_one", f"{name}_reciprocal"
        graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), one))
        new_nodes.append(helper.make_node("Div", [one, node.input[1]], [recip], name=recip))
        new_nodes.append(
            helper.make_node(
                "Mul", [node.input[0], recip], list(node.output), name=f"{name}_as_mul"
            )
        )
        done.append(name)
    if done:
        del graph.node[:]
        graph.node.extend(new_nodes)
    return done


def _broadcast_divisor(node: Any, shapes: dict[str, tuple[int, ...]], constants: set[str]) -> bool:
    """True when the divisor is a computed float tensor with far fewer elements than the
    dividend that broadcasts to it (a constant divisor is folded by the converter already).

    ``shapes`` holds float tensors only (an integer ``Div`` truncates, a reciprocal would not).
    """
    a, b = (shapes.get(i) for i in node.input[:2])
    if a is None or b is None or node.input[1] in constants or len(b) > len(a):
        return False
    padded = (1,) * (len(a) - len(b)) + tuple(b)
    if any(db not in (1, da) for da, db in zip(a, padded, strict=True)):
        return False
    return math.prod(a) >= MIN_BROADCAST * math.prod(padded)
