"""Exact rewrites of the ONNX graph before onnx2tf, for patterns known to break conversion.

Each keeps what the graph computes (tests prove equality in float) and changes only how:

* max-pool padding after a non-negative activation -> an explicit zero ``Pad`` + unpadded
  max-pool (onnx2tf otherwise pads with the float minimum, calibration then gives that
  tensor an int8 scale near 1e36 and the native runtimes abort);
* channel shuffle written as Reshape(5-D) -> Transpose -> Reshape -> one ``Gather`` of the
  channels (onnx2tf mis-lays-out the 5-D transpose and fails on a zero-sized tensor);
* ``HardSigmoid`` -> ``Add`` + ``Clip(0, 1/alpha)`` + ``Mul`` (the converter otherwise fuses it
  into RELU_0_TO_1, which TFLite Micro does not have; RELU6 it has);
* a 3-D ``ConvTranspose`` with a bias -> the same ``ConvTranspose`` without bias + an ``Add`` of
  the bias per channel (onnx2tf 1.28 adds the bias of a 3-D transposed convolution only when
  ``group > 1`` and silently drops it otherwise; PhysNet's upsampling, BN folded in, hits this).

The rewrites for the field's rPPG nets (ScatterND slice assignment, Erf, Constant nodes) are in
:mod:`firmware_export.rewrite_onnx_ops`, run first.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_NON_NEGATIVE_ONNX_OPS = {"Relu", "Sigmoid", "Softmax", "HardSigmoid", "Abs", "Exp", "Softplus"}


def rewrite_onnx(model: Any) -> list[str]:
    """Apply every ONNX rewrite in place; return a description of each change."""
    from firmware_export.rewrite_onnx_ops import rewrite_onnx_ops

    done = rewrite_onnx_ops(model)
    done += [f"maxpool-zero-pad:{n}" for n in rewrite_maxpool_padding(model)]
    done += [f"channel-shuffle-gather:{n}" for n in rewrite_channel_shuffle(model)]
    done += [f"hardsigmoid-relu6:{n}" for n in rewrite_hardsigmoid(model)]
    done += [f"convtranspose3d-bias-add:{n}" for n in rewrite_conv_transpose3d_bias(model)]
    if done:
        log.info("ONNX rewrites: %s", ", ".join(done))
    return done


def _constants(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(a.t)
    return values


def rewrite_maxpool_padding(onnx_model: Any) -> list[str]:
    """ONNX pass: a padded MaxPool fed by a non-negative op gets an explicit zero Pad instead.

    With every input >= 0 and at least one real element in each window, padding with 0 gives
    the same maxima as padding with -inf. Returns the names of the rewritten nodes.
    """
    from onnx import helper, numpy_helper

    graph = onnx_model.graph
    producers = {o: n for n in graph.node for o in n.output}
    inits = _constants(graph)
    done, new_nodes = [], []
    for node in graph.node:
        pads = next((list(a.ints) for a in node.attribute if a.name == "pads"), [])
        src = producers.get(node.input[0]) if node.input else None
        if (
            node.op_type != "MaxPool"
            or not any(pads)
            or src is None
            or not _non_negative(src, inits)
        ):
            new_nodes.append(node)
            continue
        rank = len(pads) // 2
        pad_name = f"{node.name or node.output[0]}_zero_pads"
        full = [0, 0, *pads[:rank], 0, 0, *pads[rank:]]
        graph.initializer.append(numpy_helper.from_array(np.array(full, dtype=np.int64), pad_name))
        padded = f"{node.input[0]}_zero_padded_for_{node.name or node.output[0]}"
        new_nodes.append(
            helper.make_node(
                "Pad",
                [node.input[0], pad_name],
                [padded],
                mode="constant",
                name=f"{node.name}_ZeroPad",
            )
        )
        for a in node.attribute:
            if a.name == "pads":
                del a.ints[:]
                a.ints.extend([0] * len(pads))
        node.input[0] = padded
        new_nodes.append(node)
        done.append(node.name or node.output[0])
    del graph.node[:]
    graph.node.extend(new_nodes)
    return done


def _non_negative(node: Any, inits: dict[str, Any]) -> bool:
    """True when the node's output is provably >= 0 (ReLU, ReLU6 as Clip(min=0), sigmoid, ...)."""
    if node.op_type in _NON_NEGATIVE_ONNX_OPS:
        return True
    if node.op_type != "Clip":
        return False
    if len(node.input) > 1 and node.input[1]:  # opset >= 11: min is an input
        low = inits.get(node.input[1])
        return low is not None and float(low) >= 0
    return any(a.name == "min" and a.f >= 0 for a in node.attribute)


def _consumers(graph: Any) -> dict[str, list[Any]]:
    users: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    return users


def rewrite_channel_shuffle(onnx_model: Any) -> list[str]:
    """Reshape(N,g,C/g,H,W) -> Transpose(0,2,1,3,4) -> Reshape(N,C,H,W) becomes a channel Gather."""
    from onnx import helper, numpy_helper

    graph = onnx_model.graph
    consts, users = _constants(graph), _consumers(graph)
    drop, done = set(), []
    for first in graph.node:
        chain = _shuffle_chain(first, consts, users)
        if chain is None:
            continue
        _, transpose, last = chain
        g, cpg = int(consts[first.input[1]][1]), int(consts[first.input[1]][2])
        k = np.arange(g * cpg)
        perm = (k % g) * cpg + k // g
        name = f"{last.name or last.output[0]}_shuffle_indices"
        graph.initializer.append(
            numpy_helper.from_array(perm.astype(np.int32), name)
        )  # TFLM gathers with int32 positions only
        gather = helper.make_node(
            "Gather",
            [first.input[0], name],
            [last.output[0]],
            axis=1,
            name=f"{last.name}_ChannelShuffle",
        )
        graph.node.insert(list(graph.node).index(last), gather)
        drop |= {id(first), id(transpose), id(last)}
        done.append(last.name or last.output[0])
    kept = [n for n in graph.node if id(n) not in drop]
    del graph.node[:]
    graph.node.extend(kept)
    return done


def _shuffle_chain(
    first: Any, consts: dict[str, np.ndarray], users: dict[str, list[Any]]
) -> tuple[Any, Any, Any] | None:  # (Reshape, Transpose, Reshape) nodes
    if first.op_type != "Reshape" or first.input[1] not in consts:
        return None
    shape = consts[first.input[1]]
    nxt = users.get(first.output[0], [])
    if shape.shape != (5,) or len(nxt) != 1 or nxt[0].op_type != "Transpose":
        return None
    transpose = nxt[0]
    perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), [])
    after = users.get(transpose.output[0], [])
    if perm != [0, 2, 1, 3, 4] or len(after) != 1 or after[0].op_type != "Reshape":
        return None
    last = after[0]
    out_shape = consts.get(last.input[1])
    if (
        out_shape is None
        or out_shape.shape != (4,)
        or int(out_shape[1]) != int(shape[1] * shape[2])
    ):
        return None
    return first, transpose, last


def rewrite_hardsigmoid(onnx_model: Any) -> list[str]:
    """HardSigmoid(x) = clip(alpha x + beta, 0, 1) = alpha * clip(x + beta/alpha, 0, 1/alpha)."""
    from onnx import helper, numpy_helper

    graph = onnx_model.graph
    new_nodes, done = [], []
    for node in graph.node:
        if node.op_type != "HardSigmoid":
            new_nodes.append(node)
            continue
        attrs = {a.name: a.f for a in node.attribute}
        alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
        base = node.name or node.output[0]
        names = [f"{base}_{s}" for s in ("shift", "low", "high", "scale", "shifted", "clipped")]
        for n, v in zip(names[:4], (beta / alpha, 0.0, 1.0 / alpha, alpha), strict=True):
            graph.initializer.append(numpy_helper.from_array(np.array(v, dtype=np.float32), n))
        new_nodes += [
            helper.make_node("Add", [node.input[0], names[0]], [names[4]], name=f"{base}_Add"),
            helper.make_node(
                "Clip", [names[4], names[1], names[2]], [names[5]], name=f"{base}_Clip"
            ),
            helper.make_node("Mul", [names[5], names[3]], [node.output[0]], name=f"{base}_Mul"),
        ]
        done.append(base)
    del graph.node[:]
    graph.node.extend(new_nodes)
    return done


def _spatial_rank(node: Any, consts: dict[str, np.ndarray]) -> int:
    """Number of spatial axes of a Conv/ConvTranspose node (from its kernel or its weight)."""
    kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), [])
    if kernel:
        return len(kernel)
    weight = consts.get(node.input[1]) if len(node.input) > 1 else None
    return weight.ndim - 2 if weight is not None else -1


def rewrite_conv_transpose3d_bias(onnx_model: Any) -> list[str]:
    """3-D ConvTranspose(x, W, b) -> Add(ConvTranspose(x, W), b reshaped to (1, C, 1, 1, 1)).

    The bias is added to every output position of its channel, so adding it afterwards is exact.
    Returns the names of the rewritten nodes.
    """
    from onnx import helper, numpy_helper

    graph = onnx_model.graph
    consts = _constants(graph)
    new_nodes, done = [], []
    for node in graph.node:
        has_bias = node.op_type == "ConvTranspose" and len(node.input) > 2 and bool(node.input[2])
        if not has_bias or _spatial_rank(node, consts) != 3 or node.input[2] not in consts:
            new_nodes.append(node)
            continue
        base = node.name or node.output[0]
        bias = consts[node.input[2]].astype(np.float32).reshape(1, -1, 1, 1, 1)
        bias_name, raw = f"{base}_bias_5d", f"{base}_without_bias"
        graph.initializer.append(numpy_helper.from_array(bias, bias_name))
        out = node.output[0]
        del node.input[2:]
        node.output[0] = raw
        add = helper.make_node("Add", [raw, bias_name], [out], name=f"{base}_BiasAdd")
        new_nodes += [node, add]
        done.append(base)
    del graph.node[:]
    graph.node.extend(new_nodes)
    _drop_unused_initializers(graph)
    return done


def _drop_unused_initializers(graph: Any) -> None:
    used = {i for n in graph.node for i in n.input}
    used |= {v.name for v in (*graph.input, *graph.output)}
    kept = [init for init in graph.initializer if init.name in used]
    if len(kept) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)
