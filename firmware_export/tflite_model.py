"""Read a ``.tflite`` flatbuffer without a runtime: ops, tensors, buffers.

Parsing never prepares the model, so it is safe on models that would crash a native
runtime (see firmware_export.isolate). The schema comes from ai-edge-litert's generated
flatbuffer bindings, so no TensorFlow import is needed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

import numpy as np

from tinyprune.errors import ConfigError

_NUMPY_TYPES = {
    0: np.float32,
    1: np.float16,
    2: np.int32,
    3: np.uint8,
    4: np.int64,
    6: np.bool_,
    7: np.int16,
    9: np.int8,
    10: np.float64,
    16: np.uint32,
    17: np.uint16,
}


#: Schema type names whose element size is known (constants of these are size-checked).
_TYPE_SIZES = {
    "FLOAT32",
    "FLOAT16",
    "INT32",
    "UINT8",
    "INT64",
    "BOOL",
    "INT16",
    "INT8",
    "FLOAT64",
    "UINT32",
    "UINT16",
}


@cache
def _schema() -> ModuleType:  # imported lazily: the bindings are a 1 MB module
    return importlib.import_module("ai_edge_litert.schema_py_generated")


@cache
def _builtin_names() -> dict[int, str]:
    ops = _schema().BuiltinOperator
    return {v: k for k, v in vars(ops).items() if k.isupper() and isinstance(v, int)}


@cache
def _type_names() -> dict[int, str]:
    types = _schema().TensorType
    return {v: k for k, v in vars(types).items() if k.isupper() and isinstance(v, int)}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the main subgraph."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str  # schema name: INT8, INT32, FLOAT32, ...
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    buffer: int
    is_constant: bool  # has data in the flatbuffer (weights, biases, shapes)

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor's data (product of the shape times the element size)."""
        itemsize = np.dtype(_NUMPY_TYPES.get(_type_code(self.dtype), np.uint8)).itemsize
        return int(np.prod(self.shape, dtype=np.int64)) * itemsize if self.shape else itemsize


@dataclass(frozen=True)
class OpInfo:
    """One operator of the main subgraph, in execution order."""

    index: int
    name: str  # builtin name, e.g. CONV_2D; custom ops: CUSTOM:<code>
    inputs: tuple[int, ...]  # tensor indices, -1 for an omitted optional input
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class TfliteModel:
    """The main subgraph of a parsed model plus access to constant data."""

    tensors: tuple[TensorInfo, ...]
    ops: tuple[OpInfo, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    _buffers: tuple[bytes, ...]

    def constant(self, tensor: int) -> np.ndarray | None:
        """Data of a constant tensor as a numpy array, or None for an activation."""
        t = self.tensors[tensor]
        raw = self._buffers[t.buffer] if t.buffer < len(self._buffers) else b""
        if not raw:
            return None
        dtype = _NUMPY_TYPES.get(_type_code(t.dtype))
        if dtype is None:
            return None
        return np.frombuffer(raw, dtype=dtype).reshape(t.shape)


def _type_code(name: str) -> int:
    return {v: k for k, v in _type_names().items()}[name]


def builtin_op_name(code: int) -> str:
    """Schema name of a builtin operator code (``3`` -> ``CONV_2D``)."""
    return _builtin_names().get(code, f"UNKNOWN_{code}")


def parse_tflite(data: bytes) -> TfliteModel:
    """Parse a ``.tflite`` flatbuffer; raise :class:`ConfigError` if it is not one."""
    schema = _schema()
    if len(data) < 8 or data[4:8] != b"TFL3":
        msg = (
            "not a TFLite flatbuffer (missing the 'TFL3' identifier): is the file a .tflite model?"
        )
        raise ConfigError(msg)
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as e:  # flatbuffers raises assorted errors on corrupt input
        msg = f"corrupt .tflite flatbuffer ({type(e).__name__}: {e}); re-export the model"
        raise ConfigError(msg) from e
    if not model.subgraphs:
        msg = "the .tflite model has no subgraph"
        raise ConfigError(msg)
    try:
        parsed = _main_subgraph(model, data)
    except Exception as e:  # noqa: BLE001 - indices and strings of a corrupt model
        msg = f"corrupt .tflite flatbuffer ({type(e).__name__}: {e}); re-export the model"
        raise ConfigError(msg) from e
    _check_consistent(parsed, _sparse_tensors(model))
    return parsed


def _sparse_tensors(model: object) -> set[int]:
    """Tensors stored in TFLite's sparse encoding (their data is shorter than their shape)."""
    subgraphs = getattr(model, "subgraphs", None)
    sg = subgraphs[0] if subgraphs else None
    tensors = (sg.tensors or []) if sg is not None else []
    return {i for i, t in enumerate(tensors) if getattr(t, "sparsity", None) is not None}


def _check_consistent(model: TfliteModel, sparse: frozenset[int] | set[int] = frozenset()) -> None:
    """Refuse tensor indices out of range and constants whose data does not fit their shape."""
    n = len(model.tensors)
    refs = [*model.inputs, *model.outputs]
    for op in model.ops:
        refs += [i for i in (*op.inputs, *op.outputs) if i != -1]
    bad = [i for i in refs if not 0 <= i < n]
    if bad:
        msg = f"corrupt .tflite flatbuffer: tensor index {bad[0]} out of range (0..{n - 1})"
        raise ConfigError(msg)
    for t in model.tensors:
        if t.is_constant and any(d < 0 for d in t.shape):
            msg = f"corrupt .tflite flatbuffer: constant tensor {t.name!r} has shape {t.shape}"
            raise ConfigError(msg)
        if t.is_constant and t.dtype in _TYPE_SIZES and t.index not in sparse:
            raw = model._buffers[t.buffer]
            if len(raw) != t.nbytes:
                msg = (
                    f"corrupt .tflite flatbuffer: constant tensor {t.name!r} holds {len(raw)} "
                    f"bytes, its shape {t.shape} ({t.dtype}) needs {t.nbytes}"
                )
                raise ConfigError(msg)


def _main_subgraph(model: Any, data: bytes) -> TfliteModel:  # model: the schema's ModelT
    sg = model.subgraphs[0]
    buffers = []
    for b in model.buffers or []:
        if b.data is not None and len(b.data):
            buffers.append(bytes(bytearray(b.data)))
        elif getattr(b, "offset", 0) and b.offset > 1:  # large models keep data after the root
            buffers.append(data[b.offset : b.offset + b.size])
        else:
            buffers.append(b"")
    tensors = []
    for i, t in enumerate(sg.tensors or []):
        q = t.quantization
        scale = tuple(float(s) for s in (q.scale if q is not None and q.scale is not None else []))
        zp = tuple(
            int(z) for z in (q.zeroPoint if q is not None and q.zeroPoint is not None else [])
        )
        name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        shape = tuple(int(s) for s in (t.shape if t.shape is not None else []))
        tensors.append(
            TensorInfo(
                i,
                name,
                shape,
                _type_names().get(t.type, str(t.type)),
                scale,
                zp,
                t.buffer,
                bool(t.buffer < len(buffers) and buffers[t.buffer]),
            )
        )
    ops = []
    for i, op in enumerate(sg.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = builtin_op_name(builtin)
        if name == "CUSTOM":
            custom = (
                code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
            )
            name = f"CUSTOM:{custom}"
        ins = tuple(int(x) for x in (op.inputs if op.inputs is not None else []))
        outs = tuple(int(x) for x in (op.outputs if op.outputs is not None else []))
        ops.append(OpInfo(i, name, ins, outs))
    return TfliteModel(
        tuple(tensors),
        tuple(ops),
        tuple(int(x) for x in sg.inputs),
        tuple(int(x) for x in sg.outputs),
        tuple(buffers),
    )
