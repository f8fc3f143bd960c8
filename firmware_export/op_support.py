"""Ops a runtime registers but cannot run in int8, and runtime failures named by PyTorch layer.

TFLM registers EXP, LOG, SQRT or GATHER_ND, but some of its kernels take float32 only (or
int32 indices only), so a full-int8 model that uses them fails when TFLM prepares or invokes
it. The op check (:func:`firmware_export.tflm.check_ops`) cannot see that: the names are
registered. :func:`tflm_kernel_failure` runs the model once on TFLM (zeros in, a child
process) and reads the failing node from TFLM's own message ("Node EXP (number 3) failed to
prepare"); for a TFLM target that is exit 4 naming the PyTorch layer and the op, for a LiteRT
target TFLM is only a reference (no C arrays, the arena an estimate).

:func:`naming_layers` rewrites errors raised after conversion so that they name PyTorch
module paths instead of the converter's internal tensor names, and turns a native runtime's
node failure into the documented exit code instead of exit 1.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from tinyprune.errors import ExportError, TinypruneError, UnsupportedOpError, VerificationError

log = logging.getLogger(__name__)

_TFLM_NODE = re.compile(r"Node (\w+) \(number (\d+)\) failed to (prepare|invoke)")
_LITERT_NODE = re.compile(r"Node number (\d+) \((\w+)\) failed to (prepare|invoke)")
_SHORTAGE = re.compile(r"Requested: \d+, available \d+, missing: \d+|Too many buffers")
_TYPE_LINE = re.compile(r"[^\n]*(?:type|not supported|INT64|INT8|FLOAT32)[^\n]*", re.IGNORECASE)


@dataclass(frozen=True)
class KernelFailure:
    """A node a native runtime could not prepare or invoke."""

    runtime: str  # "TFLM" or "LiteRT"
    op: str
    index: int
    phase: str  # "prepare" or "invoke"
    reason: str  # the runtime's line before the node message, e.g. "INT8 != FLOAT32"


def parse_kernel_failure(text: str) -> KernelFailure | None:
    """The failing node named in a TFLM or LiteRT message, or None."""
    m = _TFLM_NODE.search(text)
    if m is not None:
        runtime, op, index, phase = "TFLM", m.group(1), int(m.group(2)), m.group(3)
    else:
        m = _LITERT_NODE.search(text)
        if m is None:
            return None
        runtime, op, index, phase = "LiteRT", m.group(2), int(m.group(1)), m.group(3)
    before = text[: m.start()]
    lines = [ln.strip() for ln in before.splitlines() if ln.strip()]
    typed = [ln for ln in lines if _TYPE_LINE.fullmatch(ln)]
    reason = (typed or lines or [""])[-1]
    reason = reason.split("RuntimeError:")[-1].strip()
    return KernelFailure(runtime, op, index, phase, reason[:200])


def tflm_kernel_failure(model_bytes: bytes, arena_bytes: int) -> KernelFailure | None:
    """Prepare and invoke the model once on TFLM (zeros in); the failing node, or None.

    A failure for lack of arena is not a kernel failure (None): the arena stage measures it.
    """
    from firmware_export.tflite_model import parse_tflite
    from firmware_export.tflm import run_tflm_outputs

    model = parse_tflite(model_bytes)
    first = model.tensors[model.inputs[0]]
    dtype = np.int8 if first.dtype == "INT8" else np.float32
    if len(model.inputs) != 1 or first.dtype not in ("INT8", "FLOAT32"):
        return None
    zeros = np.zeros((1, *first.shape[1:]), dtype=dtype)
    try:
        run_tflm_outputs(model_bytes, zeros, arena_bytes)
    except ExportError as e:
        if _SHORTAGE.search(str(e)):
            return None
        return parse_kernel_failure(str(e))
    return None


def unsupported_kernel(
    failure: KernelFailure, target: str, layer: str | None
) -> UnsupportedOpError:
    """Exit 4: ``layer`` uses an op whose TFLM kernel cannot run it in int8."""
    where = f"layer {layer!r}" if layer else f"op {failure.index}"
    msg = (
        f"{where} needs {failure.op} (op {failure.index}), which TFLite Micro registers but "
        f"cannot run in this full-int8 model ({failure.phase} failed: {failure.reason}), so "
        f"target {target!r} (runtime tflm) cannot run it; nothing was emitted. Replace the "
        "layer with ops TFLM runs in int8 (conv, add, mul, tanh, logistic, softmax, ...) or "
        "target a LiteRT profile (--target rpi4)"
    )
    return UnsupportedOpError(msg, ops=(failure.op,), target=target, stage="op-check")


def replace_tensor_names(text: str, labels: Mapping[str, str]) -> str:
    """``text`` with each TFLite tensor name of ``labels`` replaced by its PyTorch layer."""
    for name in sorted(labels, key=len, reverse=True):
        if not name or name not in text:
            continue
        label = labels[name]
        for before in (f"output tensor '{name}'", f"output '{name}'", f"'{name}'"):
            text = text.replace(before, f"layer '{label}'")
        text = text.replace(name, f"layer '{label}'")
    return text


def name_divergent_ops(value: object, by_tensor: dict[str, str]) -> None:
    """``first_divergent_op`` texts (per comparison and output) name PyTorch layers."""
    if isinstance(value, list):
        for item in value:
            name_divergent_ops(item, by_tensor)
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        if key == "first_divergent_op" and isinstance(item, str):
            value[key] = replace_tensor_names(item, by_tensor)
        else:
            name_divergent_ops(item, by_tensor)


@contextlib.contextmanager
def naming_layers(
    labels: Mapping[str, str], op_labels: Mapping[int, str], runtime: str, target: str
) -> Iterator[None]:
    """Errors raised inside name PyTorch layers; native node failures get their exit code.

    A node failure of the target's own runtime is exit 4 when it fails to prepare (no kernel
    for this op in int8) and exit 5 when it fails to invoke (the int8 model breaks at run time,
    e.g. an int8 divisor that quantizes to zero); other runtimes' failures stay exit 1.
    """
    try:
        yield
    except TinypruneError as e:
        failure = parse_kernel_failure(str(e)) if type(e) is ExportError else None
        if failure is not None:
            raise _failure_error(failure, op_labels, runtime, target) from e
        if e.args and isinstance(e.args[0], str):
            e.args = (replace_tensor_names(e.args[0], labels), *e.args[1:])
        raise


def _failure_error(
    failure: KernelFailure, op_labels: Mapping[int, str], runtime: str, target: str
) -> ExportError:
    layer = op_labels.get(failure.index)
    own = (failure.runtime == "TFLM") == (runtime == "tflm")
    if own and failure.phase == "prepare":
        if failure.runtime == "TFLM":
            return unsupported_kernel(failure, target, layer)
        msg = (
            f"layer {layer or '?'!r} needs {failure.op} (op {failure.index}), which LiteRT "
            f"cannot prepare in this int8 model ({failure.reason}); nothing was emitted"
        )
        return UnsupportedOpError(msg, ops=(failure.op,), target=target)
    where = f"layer {layer!r}" if layer else f"op {failure.index}"
    msg = (
        f"the int8 model fails on {failure.runtime} at {where} ({failure.op}, op "
        f"{failure.index}: {failure.phase} failed: {failure.reason}); nothing was emitted. "
        "Check that layer's int8 ranges (an int8 divisor that rounds to zero, a tensor with "
        "no spread in the calibration data)"
    )
    if own:
        return VerificationError(msg)
    return ExportError(msg, stage="verify")
