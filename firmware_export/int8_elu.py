"""Run ELU in int8: TFLite's converter leaves it float, its kernels have an int8 form.

TFLiteConverter cannot quantize ``ELU`` (its legacy quantizer says "Quantization not yet
supported for op: 'ELU'"; the MLIR one silently keeps it float behind ``DEQUANTIZE`` /
``QUANTIZE``), yet TFLite and TFLM both have an int8 ``ELU`` kernel: a 256-entry lookup
table of ``quantize(elu(dequantize(q)))``, exactly what the float island computes per input
code. :func:`quantize_elu_islands` rewrites each island ``DEQUANTIZE -> ELU -> [same-scale
ops: PAD, STRIDED_SLICE, CONCATENATION, RESHAPE, GATHER, ...] -> QUANTIZE`` in int8: the ELU
reads the int8 tensor, the island's tensors take one int8 scale (covering every exit's
range), and each exit ``QUANTIZE`` requantizes int8 -> int8 (an identity when the scales
agree). Islands of any other shape stay float (and the report lists them in ``float_ops``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from firmware_export.tflite_model import _schema

log = logging.getLogger(__name__)

_SAME_SCALE = (
    "PAD",
    "PADV2",
    "STRIDED_SLICE",
    "SLICE",
    "CONCATENATION",
    "RESHAPE",
    "GATHER",
    "TRANSPOSE",
    "SQUEEZE",
    "EXPAND_DIMS",
)


def _names() -> dict[int, str]:
    ops = _schema().BuiltinOperator
    return {v: k for k, v in vars(ops).items() if k.isupper() and isinstance(v, int)}


def quantize_elu_islands(model_bytes: bytes) -> bytes:
    """The model with every convertible float ELU island in int8 (unchanged if none)."""
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    names = _names()
    codes = [
        names.get(max(c.builtinCode, c.deprecatedBuiltinCode), "?") for c in model.operatorCodes
    ]
    done = 0
    for op in list(model.subgraphs[0].operators):
        if codes[op.opcodeIndex] == "ELU" and _rewrite_island(model, op, codes):
            done += 1
    if not done:
        return model_bytes
    # ELU keeps op version 1: LiteRT registers only that one, and its kernel takes int8 too
    log.info("ELU in int8: %d float island(s) rewritten", done)
    from firmware_export.offline_plan import pack_aligned

    return pack_aligned(model, len(model_bytes))


def _producers(graph: Any) -> dict[int, Any]:
    return {t: op for op in graph.operators for t in op.outputs}


def _consumers(graph: Any, tensor: int) -> list[Any]:
    return [op for op in graph.operators if tensor in list(op.inputs)]


def _rewrite_island(model: Any, elu: Any, codes: list[str]) -> bool:
    schema = _schema()
    graph = model.subgraphs[0]
    tensors = graph.tensors
    deq = _producers(graph).get(int(elu.inputs[0]))
    if deq is None or codes[deq.opcodeIndex] != "DEQUANTIZE":
        return False
    src = int(deq.inputs[0])
    if tensors[src].type != schema.TensorType.INT8:
        return False
    island, exits = _island(model, int(elu.outputs[0]), codes)
    if island is None or not exits:
        return False
    params = [_params(tensors[int(q.outputs[0])]) for q in exits]
    scale, zero = _covering(params)
    for t in island:
        tensors[t].type = schema.TensorType.INT8
        q = schema.QuantizationParametersT()
        q.scale, q.zeroPoint = np.array([scale], np.float32), np.array([zero], np.int64)
        tensors[t].quantization = q
    elu.inputs = np.array([src], dtype=np.int32)
    if not [o for o in _consumers(graph, int(deq.outputs[0])) if o is not deq]:
        graph.operators.remove(deq)
    for q, p in zip(exits, params, strict=True):
        if p == (scale, zero):  # an identity requantization: read the island tensor directly
            _replace_tensor(graph, int(q.outputs[0]), int(q.inputs[0]))
            graph.operators.remove(q)
    return True


def _params(tensor: Any) -> tuple[float, int]:
    return float(tensor.quantization.scale[0]), int(tensor.quantization.zeroPoint[0])


def _replace_tensor(graph: Any, old: int, new: int) -> None:
    for op in graph.operators:
        op.inputs = np.array([new if int(i) == old else int(i) for i in op.inputs], np.int32)
    graph.outputs = np.array([new if int(t) == old else int(t) for t in graph.outputs], np.int32)


def _island(model: Any, start: int, codes: list[str]) -> tuple[set[int] | None, list[Any]]:
    """The float tensors reachable from ``start`` through same-scale ops, and the exits."""
    graph = model.subgraphs[0]
    float32 = _schema().TensorType.FLOAT32
    island, exits, todo = {start}, [], [start]
    outputs = {int(t) for t in graph.outputs}
    while todo:
        t = todo.pop()
        if t in outputs:
            return None, []
        for op in _consumers(graph, t):
            name = codes[op.opcodeIndex]
            if name == "QUANTIZE":
                exits.append(op)
                continue
            others = [int(i) for i in op.inputs if i >= 0 and int(i) not in island]
            if name not in _SAME_SCALE or any(
                graph.tensors[i].type == float32 and not _constant(model, i) for i in others
            ):
                return None, []  # an op that rescales, or another float tensor joins
            for out in op.outputs:
                if int(out) not in island:
                    island.add(int(out))
                    todo.append(int(out))
    return island, exits


def _constant(model: Any, tensor: int) -> bool:
    buf = model.buffers[model.subgraphs[0].tensors[tensor].buffer]
    return buf.data is not None and len(buf.data) > 0


def _covering(params: list[tuple[float, int]]) -> tuple[float, int]:
    """One int8 (scale, zero point) whose range covers every given one (the same if equal)."""
    if len(set(params)) == 1:
        return params[0]
    lo = min(s * (-128 - z) for s, z in params)
    hi = max(s * (127 - z) for s, z in params)
    scale = (hi - lo) / 255.0
    return scale, int(np.clip(round(-128 - lo / scale), -128, 127))
