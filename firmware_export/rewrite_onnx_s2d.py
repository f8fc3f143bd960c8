"""LiteRT rewrite: a narrow full-resolution convolution runs on 2x2 pixel blocks.

XNNPACK's int8 convolution costs about the same per output pixel whatever the channel count
up to ~16 channels (measured here, x86 AVX-512: a 3x3 convolution at 10x36x36, 3->8 channels
0.57 ms, 16->16 0.57 ms; ``bench/xnnpack_int8.py``): the per-pixel indirection and
requantization cost dominates, so pruning the full-resolution layers of an rPPG net makes them
no faster in int8. Run on ``SpaceToDepth(2)`` of its input, the same convolution has a quarter
of the pixels and four times the channels (3->8 at 36x36 becomes 12->32 at 18x18: 0.57 -> 0.28 ms
with both data moves; ``bench/xnnpack_int8.py --blocks``); ``DepthToSpace(2)`` puts the pixels
back.

The rewrite is exact in float. Per spatial axis, output ``2c + q`` of the original convolution
reads input ``2c + q + t - pad`` for kernel tap ``t``; that is input block ``c + d``, phase
``r``. The block convolution's weight at output phase ``q``, input phase ``r`` and block tap
``d`` is the original tap ``t`` it stands for, or 0 (``_block_taps``). In int8 each of its
output channels is one original channel's weights at one output phase, so its per-channel
scale is at most the original's (never coarser).

Between two rewritten convolutions, ``DepthToSpace`` -> element-wise activation ->
``SpaceToDepth`` becomes the activation alone on the blocks (``_cancel_block_moves``); each
``SpaceToDepth`` left becomes a stride-2 convolution that picks the pixels
(``_space_to_depth_as_conv``). After quantization each ``DEPTH_TO_SPACE`` becomes a 4-D
``RESHAPE -> TRANSPOSE -> RESHAPE`` (:mod:`firmware_export.tflite_depth_to_space`), which
LiteRT's reference kernels and TFLM run too, so the export's bit-exact checks still apply.

On the README's pruned TS-CAN (int8, one thread): 3.25 -> 1.92 CPU ms per window.

Only convolutions that gain are rewritten: group 1, stride 1, dilation 1, even input and output
height and width, at most :data:`MAX_CHANNELS` channels in and out (16->16: 1.76x faster; at
24->24 the block form is 0.78x, at 32->32 0.68x). Measured on x86 only: on a Pi,
``tinyprune bench-runtime`` on two exports (``--space-to-depth auto`` / ``off``) says which is
faster there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from firmware_export.rewrite_onnx_rank import static_shapes

#: Largest input or output channel count of a convolution the rewrite takes.
MAX_CHANNELS = 16

#: Element-wise ops that commute with ``DepthToSpace`` (they act on each value alone).
_POINTWISE = frozenset(
    {
        "Tanh", "Relu", "Sigmoid", "LeakyRelu", "Elu", "Selu", "Clip", "HardSigmoid",
        "HardSwish", "Neg", "Abs", "Identity", "Softplus", "Exp",
    }
)  # fmt: skip


def rewrite_convs_as_blocks(onnx_model: Any) -> list[str]:
    """Rewrite every narrow convolution that gains (module docstring) in place; return the
    names of the rewritten convolutions.
    """
    import onnx

    shapes = static_shapes(onnx.shape_inference.infer_shapes(onnx_model).graph)
    graph = onnx_model.graph
    weights = {i.name: i for i in graph.initializer}
    done: list[str] = []
    replaced: set[str] = set()
    channels: dict[str, int] = {}  # SpaceToDepth node -> channels of its input
    new_nodes = []
    for node in graph.node:
        blocks = _as_blocks(node, shapes, weights) if node.op_type == "Conv" else None
        if blocks is None:
            new_nodes.append(node)
            continue
        nodes, initializers = blocks
        channels[nodes[0].name] = shapes[node.input[0]][1]
        new_nodes += nodes
        graph.initializer.extend(initializers)
        done.append(node.name or node.output[0])
        replaced.update(node.input[1:])
    if done:
        del graph.node[:]
        graph.node.extend(new_nodes)
        if not any(a.g.node or a.graphs for n in graph.node for a in n.attribute):
            _cancel_block_moves(graph)  # (a subgraph may read a value it would drop)
        _space_to_depth_as_conv(graph, channels)
        read = {i for n in graph.node for i in n.input} | {i.name for i in graph.input}
        for init in [i for i in graph.initializer if i.name in replaced and i.name not in read]:
            graph.initializer.remove(init)  # a rewritten convolution's own weights
    return done


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _as_blocks(
    node: Any, shapes: dict[str, tuple[int, ...]], weights: dict[str, Any]
) -> tuple[list[Any], list[Any]] | None:
    """The ``SpaceToDepth`` -> block ``Conv`` -> ``DepthToSpace`` nodes (and their new
    initializers) standing for ``node``, or None when the rewrite does not apply.
    """
    import onnx
    from onnx import helper, numpy_helper

    x, out = shapes.get(node.input[0]), shapes.get(node.output[0])
    if (
        x is None
        or out is None
        or len(x) != 4
        or len(out) != 4
        or node.input[1] not in weights
        or weights[node.input[1]].data_type != onnx.TensorProto.FLOAT
        or (len(node.input) > 2 and node.input[2] and node.input[2] not in weights)
        or _attr(node, "group", 1) != 1
        or any(s != 1 for s in _attr(node, "strides", [1, 1]))
        or any(d != 1 for d in _attr(node, "dilations", [1, 1]))
        or _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID")
        or max(x[1], out[1]) > MAX_CHANNELS
        or any(v % 2 or v == 0 for v in (*x[2:], *out[2:]))
    ):
        return None
    w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)
    if w.ndim != 4:
        return None
    pads = list(_attr(node, "pads", [0, 0, 0, 0]))
    axes = [_block_taps(w.shape[2 + a], pads[a], x[2 + a], out[2 + a]) for a in (0, 1)]
    if any(a is None for a in axes):
        return None
    (taps_y, pad_y), (taps_x, pad_x) = axes  # type: ignore[misc]
    o, c = w.shape[:2]
    block_w = np.zeros((4 * o, 4 * c, taps_y.shape[2], taps_x.shape[2]), np.float32)
    for qy, qx, ry, rx in np.ndindex(2, 2, 2, 2):
        for dy, dx in np.ndindex(taps_y.shape[2], taps_x.shape[2]):
            ty, tx = taps_y[qy, ry, dy], taps_x[qx, rx, dx]
            if ty >= 0 and tx >= 0:
                rows = slice((2 * qy + qx) * o, (2 * qy + qx + 1) * o)
                cols = slice((2 * ry + rx) * c, (2 * ry + rx + 1) * c)
                block_w[rows, cols, dy, dx] = w[:, :, ty, tx]
    name = node.name or node.output[0]
    inits = [numpy_helper.from_array(block_w, f"{name}_block_weight")]
    conv_inputs = [f"{name}_blocks_in", f"{name}_block_weight"]
    if len(node.input) > 2 and node.input[2]:
        bias = numpy_helper.to_array(weights[node.input[2]]).astype(np.float32)
        inits.append(numpy_helper.from_array(np.tile(bias, 4), f"{name}_block_bias"))
        conv_inputs.append(f"{name}_block_bias")
    nodes = [
        helper.make_node(
            "SpaceToDepth", [node.input[0]], [conv_inputs[0]], name=f"{name}_to_blocks",
            blocksize=2,
        ),
        helper.make_node(
            "Conv", conv_inputs, [f"{name}_blocks_out"], name=name,
            kernel_shape=[taps_y.shape[2], taps_x.shape[2]],
            pads=[pad_y[0], pad_x[0], pad_y[1], pad_x[1]],
        ),
        helper.make_node(
            "DepthToSpace", [f"{name}_blocks_out"], list(node.output), name=f"{name}_from_blocks",
            blocksize=2, mode="DCR",
        ),
    ]  # fmt: skip
    return nodes, inits


def _block_taps(
    k: int, begin: int, size: int, out_size: int
) -> tuple[np.ndarray, tuple[int, int]] | None:
    """One spatial axis: ``taps[q, r, d]`` = the original kernel tap that output phase ``q``
    reads from input phase ``r`` at block tap ``d`` (-1: none), and the block convolution's
    (begin, end) padding; None when the end padding would be negative. ``begin``: the
    original convolution's padding before the first pixel.
    """
    first = (0 - begin) // 2  # block offset of the first input read (phase 0, tap 0)
    last = (1 + k - 1 - begin) // 2  # ... of the last (phase 1, tap k - 1)
    k_blocks = last - first + 1
    pad_begin = -first
    pad_end = out_size // 2 - size // 2 - pad_begin + k_blocks - 1
    if pad_begin < 0 or pad_end < 0:
        return None
    taps = np.full((2, 2, k_blocks), -1, np.int64)
    for q, r, d in np.ndindex(2, 2, k_blocks):
        t = 2 * (d - pad_begin) + r - q + begin
        if 0 <= t < k:
            taps[q, r, d] = t
    return taps, (pad_begin, pad_end)


def _cancel_block_moves(graph: Any) -> None:
    """``DepthToSpace`` -> point-wise op -> ``SpaceToDepth`` (all blocksize 2, DCR) becomes the
    op on the blocks; nodes whose outputs nobody reads any more are dropped.
    """
    from onnx import helper

    nodes = list(graph.node)
    producer = {o: n for n in nodes for o in n.output}
    renamed: dict[str, str] = {}
    bypassed: set[int] = set()  # ids of the moves and ops the blocks now go around
    out: list[Any] = []
    for node in nodes:
        node.input[:] = [renamed.get(i, i) for i in node.input]
        src = producer.get(node.input[0]) if node.op_type == "SpaceToDepth" else None
        d2s = src
        if src is not None and src.op_type in _POINTWISE:
            d2s = producer.get(src.input[0])
        if src is None or d2s is None or not (_is_block_move(node) and _is_block_move(d2s)):
            out.append(node)
            continue
        bypassed |= {id(src), id(d2s)}
        if d2s is src:  # DepthToSpace -> SpaceToDepth: the blocks themselves
            renamed[node.output[0]] = d2s.input[0]
            continue
        moved = helper.make_node(
            src.op_type, [d2s.input[0], *src.input[1:]], list(node.output),
            name=f"{src.name or src.output[0]}_on_blocks",
        )  # fmt: skip
        moved.attribute.extend(src.attribute)
        out.append(moved)
    _drop_unread(graph, out, renamed, bypassed)


def _is_block_move(node: Any) -> bool:
    if node.op_type not in ("SpaceToDepth", "DepthToSpace") or _attr(node, "blocksize", 0) != 2:
        return False
    return node.op_type == "SpaceToDepth" or _attr(node, "mode", b"DCR") in (b"DCR", "DCR")


def _drop_unread(graph: Any, nodes: list[Any], renamed: dict[str, str], bypassed: set[int]) -> None:
    """Keep ``nodes`` but the bypassed ones nobody reads any more (a graph output renamed
    away keeps its name through an ``Identity``).
    """
    from onnx import helper

    for o in graph.output:
        if o.name in renamed:
            nodes.append(helper.make_node("Identity", [renamed[o.name]], [o.name]))
    while True:
        read = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in nodes if id(n) in bypassed and not read & set(n.output)]
        if not dead:
            break
        nodes = [n for n in nodes if all(n is not d for d in dead)]
    del graph.node[:]
    graph.node.extend(nodes)


def _space_to_depth_as_conv(graph: Any, channels: dict[str, int]) -> None:
    """Each ``SpaceToDepth`` left becomes a stride-2 2x2 ``Conv`` whose weights pick one pixel
    of the block for each output channel (1 or 0).

    onnx2tf converts ``SpaceToDepth`` as if its input were channels-last, which a tensor coming
    out of a ``Reshape`` is not; a convolution it converts right whatever came before. In int8
    the pick is exact (per-channel weight scale 1/127, output range that of the input). Folding
    the move into the block convolution instead (stride 2, twice the kernel) cost XNNPACK more
    than the move: a 3-channel input is padded to 8 channels per kernel tap, and that
    convolution has four times the taps.
    """
    from onnx import helper, numpy_helper

    out = []
    for node in graph.node:
        if node.op_type != "SpaceToDepth" or node.name not in channels:
            out.append(node)
            continue
        c = channels[node.name]
        pick = np.zeros((4 * c, c, 2, 2), np.float32)
        for ry, rx in np.ndindex(2, 2):
            pick[(2 * ry + rx) * c + np.arange(c), np.arange(c), ry, rx] = 1.0
        graph.initializer.append(numpy_helper.from_array(pick, f"{node.name}_pick"))
        out.append(
            helper.make_node(
                "Conv", [node.input[0], f"{node.name}_pick"], list(node.output), name=node.name,
                kernel_shape=[2, 2], strides=[2, 2],
            )
        )  # fmt: skip
    del graph.node[:]
    graph.node.extend(out)
