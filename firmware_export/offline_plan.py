"""Embed a memory plan in a ``.tflite`` as TFLM's ``OfflineMemoryAllocation`` metadata.

TFLM's ``MicroAllocator`` reads model metadata named ``OfflineMemoryAllocation``: an int32
array ``[version=1, subgraph=0, tensor count, offset of tensor 0, ...]`` where ``-1`` lets the
online planner place the tensor (``micro/micro_allocator.cc``, ``kOfflineMemAllocMetadata``).
TFLM does not check the plan, so :func:`embed_plan` validates it first
(:func:`firmware_export.memory_plan.validate_plan`).

The flatbuffer is rebuilt with the schema's object API, which drops the schema's
``force_align: 16`` on buffer data; tflite-micro's own alignment tool
(``tflite_flatbuffer_align``, the C++ flatbuffers API) then rewrites it with every buffer
16-byte aligned. The tool runs in a child process (native code). Both steps are
deterministic, so the same plan gives the same bytes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from firmware_export.isolate import run_isolated
from firmware_export.memory_plan import MemoryPlan, validate_plan
from firmware_export.tflite_model import _schema
from tinyprune.errors import ExportError

METADATA_NAME = "OfflineMemoryAllocation"
#: Value of an offset that TFLM's online planner places (``kOnlinePlannedBuffer``).
ONLINE = -1
#: Alignment the alignment tool gives buffer data, checked after realigning.
BUFFER_ALIGN = 16


def plan_metadata(plan: MemoryPlan, tensor_count: int) -> np.ndarray:
    """The int32 metadata array: version 1, subgraph 0, tensor count, one offset per tensor."""
    offsets = np.full(tensor_count, ONLINE, dtype="<i4")
    for tensor, off in plan.offsets.items():
        if not 0 <= tensor < tensor_count:
            msg = f"memory plan names tensor {tensor}, the model has {tensor_count}"
            raise ExportError(msg, stage="memory-plan")
        offsets[tensor] = off
    return np.concatenate([np.array([1, 0, tensor_count], dtype="<i4"), offsets])


def embed_plan(model_bytes: bytes, plan: MemoryPlan, timeout: float = 120) -> bytes:
    """The model with ``plan`` as offline memory metadata, buffers realigned to 16 bytes.

    Raises:
        ExportError: The plan is invalid (overlap, misalignment), the model keeps data outside
            the flatbuffer (> 2 GB models), or the realigned model fails its checks.
    """
    validate_plan(plan)
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    if any(getattr(b, "offset", 0) > 1 for b in model.buffers or []):
        msg = "the model stores buffers outside the flatbuffer; offline planning is not supported"
        raise ExportError(msg, stage="memory-plan")
    count = len(model.subgraphs[0].tensors or [])
    data = plan_metadata(plan, count)
    buf = schema.BufferT()
    buf.data = np.frombuffer(data.tobytes(), dtype=np.uint8)
    meta = [m for m in (model.metadata or []) if _name(m) != METADATA_NAME]
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers)
    model.buffers.append(buf)
    model.metadata = [*meta, entry]
    aligned = pack_aligned(model, len(model_bytes), timeout)
    check_embedded(aligned, data)
    return aligned


def pack_aligned(model: Any, size_hint: int, timeout: float = 120) -> bytes:
    """An edited ``ModelT`` back to ``.tflite`` bytes, buffers aligned (:func:`realign`)."""
    import flatbuffers

    builder = flatbuffers.Builder(size_hint + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return realign(bytes(builder.Output()), timeout)


def realign(model_bytes: bytes, timeout: float = 120) -> bytes:
    """Rewrite the flatbuffer with tflite-micro's alignment tool (in a child process)."""
    return run_isolated(_align_child, model_bytes, timeout=timeout, stage="memory-plan")


def _align_child(model_bytes: bytes) -> bytes:
    from tflite_micro.tensorflow.lite.micro.tools import tflite_flatbuffer_align_wrapper

    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d, "in.tflite"), Path(d, "out.tflite")
        src.write_bytes(model_bytes)
        tflite_flatbuffer_align_wrapper.align_tflite_model(str(src), str(dst))
        return dst.read_bytes()


def read_plan(model_bytes: bytes) -> np.ndarray | None:
    """The ``OfflineMemoryAllocation`` int32 array of a model, or None without one."""
    model = _schema().Model.GetRootAs(bytearray(model_bytes), 0)
    for i in range(model.MetadataLength()):
        m = model.Metadata(i)
        if m.Name() and m.Name().decode() == METADATA_NAME:
            raw = model.Buffers(m.Buffer()).DataAsNumpy()
            return np.frombuffer(bytes(raw), dtype="<i4").copy()
    return None


def check_embedded(model_bytes: bytes, want: np.ndarray) -> None:
    """Check the metadata reads back as ``want`` and every buffer's data is 16-byte aligned.

    Raises:
        ExportError: Either check fails.
    """
    got = read_plan(model_bytes)
    if got is None or not np.array_equal(got, want):
        msg = "the offline memory plan did not survive re-serialisation of the model"
        raise ExportError(msg, stage="memory-plan")
    root = _schema().Model.GetRootAs(bytearray(model_bytes), 0)
    for i in range(root.BuffersLength()):
        b = root.Buffers(i)
        if b.DataLength() == 0:
            continue
        start = b._tab.Vector(b._tab.Offset(4))  # noqa: SLF001 - position of the data bytes
        if start % BUFFER_ALIGN:
            msg = f"buffer {i} of the planned model is not {BUFFER_ALIGN}-byte aligned"
            raise ExportError(msg, stage="memory-plan")


def _name(entry: object) -> str:
    name = getattr(entry, "name", b"")
    return name.decode() if isinstance(name, bytes) else str(name)
