"""The persistent arena tail itemised for a 32-bit target, and CMSIS-NN's kernel scratch.

The host measures TFLM with 64-bit pointers and reference kernels; a Cortex-M has 32-bit
pointers and runs CMSIS-NN kernels that ask for scratch buffers. Instead of a flat margin,
the header's arena is ``planned head + 32-bit tail + CMSIS-NN scratch``:

* :func:`tail_items` reads the recording allocator's per-type lines
  (``RecordingMicroAllocator::PrintAllocations``) and computes each type for a 32-bit target
  from the struct layouts of the pinned TFLM (tflite-micro 0.dev20261023, built with
  ``TF_LITE_STATIC_MEMORY``), which the host figures confirm (64-bit sizes in brackets):
  ``TfLiteEvalTensor`` {void* data, TfLiteIntArray* dims, TfLiteType type} = 12 B (24);
  ``TfLiteTensor`` {type, data, dims, params{float, int32}, allocation_type, size_t bytes,
  bool is_variable, quantization{type, void*}} = 40 B (64); ``TfLiteAffineQuantization``
  {TfLiteFloatArray*, TfLiteIntArray*, int32} = 12 B (24) plus its zero-point
  ``TfLiteIntArray`` (pointer-free); ``NodeAndRegistration`` {TfLiteNode: 6 pointers + int;
  registration pointer} = 32 B (64). Kernel ``OpData`` ("Persistent buffer data": structs with
  pointers plus pointer-free per-channel int32 multiplier/shift arrays) and the unitemised
  rest (allocator objects, builtin op params) are kept at the host figure: an upper bound,
  since only pointers shrink.
* :func:`cmsis_nn_scratch` gives each CONV_2D / DEPTHWISE_CONV_2D / AVERAGE_POOL_2D /
  FULLY_CONNECTED layer the scratch its CMSIS-NN kernel requests, from the documented
  ``*_get_buffer_size`` formulas (CMSIS-NN ``arm_convolve_get_buffer_sizes_s8.c``,
  ``arm_depthwise_conv_get_buffer_sizes_s8.c``, ``arm_fully_connected_get_buffer_sizes_s8.c``,
  ``arm_avgpool_s8_get_buffer_size``) for the profile's ISA: ``none`` (Cortex-M0/M0+/M3),
  ``dsp`` (M4/M7/M33) or ``mve`` (M55/M85). Scratch is placed online beside the planned
  tensors and lives for one op, so the arena needs the largest per-op total on top of the head.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from firmware_export.memory_plan import align_up
from firmware_export.tflite_model import OpInfo, TfliteModel

_LINE_RE = re.compile(
    r"'([^']+)' used (\d+) bytes with alignment overhead \(requested (\d+) bytes for (\d+) "
)
_TAIL_RE = re.compile(r"Arena allocation tail (\d+) bytes")
_HEAD_RE = re.compile(r"Arena allocation head (\d+) bytes")

#: Per-item bytes on a 32-bit target, per allocation type with a fixed struct size.
_STRUCT_32 = {
    "TfLiteEvalTensor data": 12,
    "Persistent TfLiteTensor data": 40,
    "NodeAndRegistration struct": 32,
}
_QUANT_STRUCT = (24, 12)  # TfLiteAffineQuantization on 64-bit, 32-bit
ISAS = ("none", "dsp", "mve")
#: ``CH_IN_BLOCK_MVE`` of CMSIS-NN's ``arm_nnsupportfunctions.h``.
_CH_IN_BLOCK_MVE = 124


@dataclass(frozen=True)
class TailItem:
    """One allocation type of the tail: host bytes (used, with alignment) and 32-bit bytes."""

    kind: str
    count: int
    host_bytes: int
    bytes_32bit: int
    how: str


def head_and_tail(text: str) -> tuple[int, int]:
    """(head, tail) bytes from the recording allocator's text."""
    head, tail = _HEAD_RE.search(text), _TAIL_RE.search(text)
    if head is None or tail is None:
        msg = f"no head/tail lines in TFLM's allocation record: {text[:300]!r}"
        raise ValueError(msg)
    return int(head.group(1)), int(tail.group(1))


def tail_items(text: str) -> list[TailItem]:
    """The tail per allocation type, host figure beside the 32-bit one, plus the rest.

    Args:
        text: Output of the recording allocator's ``print_allocations``.
    """
    _, tail = head_and_tail(text)
    items, listed = [], 0
    for kind, used, requested, count in _LINE_RE.findall(text):
        used, requested, count = int(used), int(requested), int(count)
        listed += used
        if kind in _STRUCT_32:
            b32 = count * _STRUCT_32[kind]
            how = f"{count} x {_STRUCT_32[kind]} B (32-bit struct)"
        elif kind == "Persistent TfLiteTensor quantization data":
            structs = count // 2  # one TfLiteAffineQuantization + one zero-point array each
            b32 = requested - structs * (_QUANT_STRUCT[0] - _QUANT_STRUCT[1])
            how = f"{structs} x {_QUANT_STRUCT[1]} B structs + zero-point arrays"
        else:
            b32 = requested
            how = "host request kept (kernel OpData: an upper bound for 32-bit)"
        items.append(TailItem(kind, count, used, b32, how))
    rest = tail - listed
    if rest > 0:
        how = "allocator objects, op params: host figure kept (upper bound)"
        items.append(TailItem("unitemised", 0, rest, rest, how))
    return items


def profile_isa(name: str, declared: str = "") -> str:
    """CMSIS-NN code path of a profile: the declared one, else from the core in its name."""
    if declared:
        return declared
    low = name.lower()
    if any(k in low for k in ("m55", "m85")):
        return "mve"
    if any(k in low for k in ("m0", "m3")) and "m33" not in low:
        return "none"
    return "dsp"


def _conv_scratch(model: TfliteModel, op: OpInfo, isa: str) -> int:
    x, w = model.tensors[op.inputs[0]], model.tensors[op.inputs[1]]
    _, kh, kw, cin = w.shape
    rhs_cols = kh * kw * x.shape[-1]
    if kh == 1 and kw == 1:
        return 0  # 1x1 (gcc build): arm_convolve_1x1_s8_fast needs none; MVE none either
    if isa == "mve":
        return 4 * ((rhs_cols + 15) // 16) * 16
    return 2 * align_up(rhs_cols, 4) * 2  # im2col: 2 columns of int16


def _depthwise_scratch(model: TfliteModel, op: OpInfo, isa: str) -> int:
    x, w, y = (
        model.tensors[op.inputs[0]],
        model.tensors[op.inputs[1]],
        model.tensors[op.outputs[0]],
    )
    _, kh, kw, _ = w.shape
    if x.shape[-1] != y.shape[-1] or x.shape[0] != 1 or isa == "none":
        return 0
    if isa == "mve":
        return 4 * _CH_IN_BLOCK_MVE * kh * kw
    if kh == 3 and kw == 3:
        return 0  # arm_depthwise_conv_3x3_s8 (padding <= 1 for SAME/VALID 3x3)
    return x.shape[-1] * kh * kw * 2


def cmsis_nn_scratch(model: TfliteModel, isa: str) -> dict[int, int]:
    """Op index -> scratch bytes its CMSIS-NN kernel requests (ops that request none omitted).

    Raises:
        ValueError: ``isa`` is not one of :data:`ISAS`.
    """
    if isa not in ISAS:
        msg = f"unknown CMSIS-NN ISA {isa!r}; expected one of {ISAS}"
        raise ValueError(msg)
    out: dict[int, int] = {}
    for op in model.ops:
        size = 0
        if op.name == "CONV_2D":
            size = _conv_scratch(model, op, isa)
        elif op.name == "DEPTHWISE_CONV_2D":
            size = _depthwise_scratch(model, op, isa)
        elif op.name == "FULLY_CONNECTED" and isa == "mve":
            size = model.tensors[op.inputs[1]].shape[-1] * 4
        elif op.name == "AVERAGE_POOL_2D" and isa == "dsp":
            size = model.tensors[op.inputs[0]].shape[-1] * 4
        if size:
            out[op.index] = align_up(size)
    return out
