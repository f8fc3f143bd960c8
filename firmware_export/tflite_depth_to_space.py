"""``DEPTH_TO_SPACE`` (block 2) as ``RESHAPE -> TRANSPOSE -> RESHAPE`` in a ``.tflite``.

The LiteRT space-to-depth rewrite (:mod:`firmware_export.rewrite_onnx_s2d`) ends each block
convolution with ``DEPTH_TO_SPACE``, which LiteRT's reference resolver has no kernel for: the
export's bit-exact checks (TFLM vs reference kernels, reference kernels vs float) and
``bench-runtime``'s reference row would be lost. The same data move as three ops every runtime
has (reference kernels, builtin, XNNPACK, TFLM; 4-D, no 6-D transpose, which TFLM lacks):

    (N, h, w, 4C) -> reshape (N*h, w, 2, 2C) -> transpose (0, 2, 1, 3) -> (N*h, 2, w, 2C)
                  -> reshape (N, 2h, 2w, C)

Channel ``(qy * 2 + qx) * C + c`` of pixel ``(i, j)`` lands at ``(2i + qy, 2j + qx, c)``: the
first reshape splits the channels into ``qy`` and ``(qx, c)``, the transpose puts ``qy`` before
``j``, and in the last shape ``(qy, j, qx)`` read as rows and columns. The moves copy int8 values,
so the intermediate tensors keep the input's quantization; outputs are bit-identical (tested).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from firmware_export.tflite_model import _schema


def depth_to_space_as_transpose(model_bytes: bytes) -> bytes:
    """The model with every block-2 ``DEPTH_TO_SPACE`` of its main graph replaced (unchanged
    bytes when there is none).
    """
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    d2s = schema.BuiltinOperator.DEPTH_TO_SPACE
    graph = model.subgraphs[0]
    ops = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) == d2s and _block(op) == 2:
            ops += _as_transpose(model, op)
        else:
            ops.append(op)
    if len(ops) == len(graph.operators):
        return model_bytes
    graph.operators = ops
    _drop_unused_opcodes(model)  # a resolver refuses a model that lists an op it lacks
    from firmware_export.offline_plan import pack_aligned

    return pack_aligned(model, len(model_bytes))


def _block(op: Any) -> int:
    return int(getattr(op.builtinOptions, "blockSize", 0) or 0)


def _as_transpose(model: Any, op: Any) -> list[Any]:
    schema = _schema()
    graph = model.subgraphs[0]
    src, dst = (graph.tensors[int(op.inputs[0])], graph.tensors[int(op.outputs[0])])
    n, h, w, c4 = (int(d) for d in src.shape)
    c = c4 // 4
    name = src.name.decode() if isinstance(src.name, bytes) else str(src.name)
    split = _tensor(model, f"{name}/d2s_split", (n * h, w, 2, 2 * c), src)
    moved = _tensor(model, f"{name}/d2s_moved", (n * h, 2, w, 2 * c), src)
    shape1 = _const(model, f"{name}/d2s_shape1", [n * h, w, 2, 2 * c])
    perm = _const(model, f"{name}/d2s_perm", [0, 2, 1, 3])
    shape2 = _const(model, f"{name}/d2s_shape2", [int(d) for d in dst.shape])
    reshape = _opcode(model, schema.BuiltinOperator.RESHAPE, 1)
    transpose = _opcode(model, schema.BuiltinOperator.TRANSPOSE, 2)
    return [
        _op(reshape, [int(op.inputs[0]), shape1], [split]),
        _op(transpose, [split, perm], [moved]),
        _op(reshape, [moved, shape2], [int(op.outputs[0])]),
    ]


def _op(opcode: int, inputs: list[int], outputs: list[int]) -> Any:
    op = _schema().OperatorT()
    op.opcodeIndex = opcode
    op.inputs = np.array(inputs, np.int32)
    op.outputs = np.array(outputs, np.int32)
    return op


def _buffer(model: Any, data: bytes | None) -> int:
    buf = _schema().BufferT()
    if data is not None:
        buf.data = np.frombuffer(data, np.uint8)
    model.buffers.append(buf)
    return len(model.buffers) - 1


def _tensor(model: Any, name: str, shape: tuple[int, ...], like: Any) -> int:
    """A new activation tensor with ``like`` 's type and quantization."""
    t = _schema().TensorT()
    t.name, t.type, t.shape = name, like.type, np.array(shape, np.int32)
    t.quantization = like.quantization
    t.buffer = _buffer(model, None)
    tensors = model.subgraphs[0].tensors
    tensors.append(t)
    return len(tensors) - 1


def _const(model: Any, name: str, values: list[int]) -> int:
    schema = _schema()
    t = schema.TensorT()
    t.name, t.type = name, schema.TensorType.INT32
    t.shape = np.array([len(values)], np.int32)
    t.buffer = _buffer(model, np.array(values, "<i4").tobytes())
    tensors = model.subgraphs[0].tensors
    tensors.append(t)
    return len(tensors) - 1


def _opcode(model: Any, builtin: int, version: int) -> int:
    """Index of ``builtin`` 's operator code (at least ``version``), added when missing."""
    for k, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            code.version = max(int(code.version), version)
            return k
    code = _schema().OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode = builtin, min(builtin, 127)
    code.version = version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _drop_unused_opcodes(model: Any) -> None:
    used = sorted({int(op.opcodeIndex) for g in model.subgraphs for op in g.operators})
    index = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[k] for k in used]
    for g in model.subgraphs:
        for op in g.operators:
            op.opcodeIndex = index[int(op.opcodeIndex)]
