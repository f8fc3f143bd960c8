"""TensorFlow Lite Micro on the host: which ops it has, how much arena a model needs, run it.

The Cortex-M target runs TFLM, so the export must (1) refuse a model that uses an op TFLM
lacks, before anything is emitted, naming the op, the layer and the way out, (2) measure
the tensor arena the model needs, and (3) produce TFLM's own outputs for verification.
The op set is read from the installed runtime binary rather than kept by hand, so it moves
with the runtime. Every call into the native interpreter runs in a child process
(:mod:`firmware_export.isolate`), because a broken int8 model can abort the process.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from firmware_export.analyze import time_limit
from firmware_export.isolate import capture_fd2, run_isolated, stderr_offset, stderr_since
from firmware_export.tflite_model import _builtin_names, parse_tflite
from tinyprune.errors import ConfigError, ExportError, UnsupportedOpError

logger = logging.getLogger(__name__)

#: A mangled ``tflite::Register_X()`` or ``tflite::micro::Register_X()``; the length prefix is
#: checked so that ``Register_X`` inside a longer identifier does not count.
_REGISTER_RE = re.compile(rb"_ZN6tflite(?:5micro)?(\d+)Register_([A-Z0-9_]+)Ev")

_CONV3D_HINT = (
    "Conv3d: use a 2-D/(2+1)-D variant (zoo: physnet_2d / (2+1)-D) "
    "or a Raspberry Pi target (--target rpi4)"
)
_POOL3D_HINT = (
    "MaxPool3d/AvgPool3d: TFLite has no 3-D pooling builtin; pool over space with 2-D pooling "
    "(firmware_export.rewrite) or use a 2-D/(2+1)-D variant of the network"
)
_GENERIC_HINT = "rewrite the layer with TFLM builtins or target a LiteRT profile (--target rpi4)"
_FLEX_HINT = (
    "a TensorFlow (Flex) op that no TFLite builtin covers: rewrite the layer with builtin ops "
    "(check the export log of onnx2tf for the layer)"
)
_OP_HINTS = {
    "CONV_3D": _CONV3D_HINT,
    "CONV_3D_TRANSPOSE": _CONV3D_HINT.replace("Conv3d", "ConvTranspose3d"),
}

#: Below about 500 bytes the host runtime cannot even place its allocator in the arena and
#: segfaults instead of reporting; bisection never probes under this size.
_CRASH_FLOOR = 1024

#: TFLM's arena allocators print this when the arena is short (tiny arenas then segfault).
# "Too many buffers" comes from the memory planner, whose bookkeeping is carved from the arena.
_SHORTAGE_RE = re.compile(
    r"Requested: \d+, available \d+, missing: \d+|Too many buffers \(max is \d+\)"
)

#: A generous arena for host runs when the caller does not give one.
DEFAULT_HOST_ARENA = 1 << 20


@cache
def tflm_builtin_ops() -> frozenset[str]:
    """TFLite builtin op names the installed TFLM runtime registers.

    Read from the ``Register_*`` symbols of ``tflite_micro``'s ``_runtime.so`` and kept to
    names of the TFLite schema's ``BuiltinOperator`` (TFLM-only registrations such as
    ``ETHOSU``, ``DECODE`` or the signal-library kernels are custom ops, not builtins).

    Returns:
        For example ``{"CONV_2D", "FULLY_CONNECTED", ...}``; never ``CONV_3D``.

    Raises:
        ExportError: tflite-micro is not installed or its binary holds no registrations.
    """
    data = _runtime_binary().read_bytes()
    found = set()
    for m in _REGISTER_RE.finditer(data):
        name = m.group(2).decode()
        if int(m.group(1)) == len("Register_") + len(name):
            found.add(name)
    schema = set(_builtin_names().values())
    ops = frozenset(found & schema)
    if not ops:
        msg = "found no TFLM kernel registrations in the tflite-micro runtime binary; reinstall it"
        raise ExportError(msg, stage="op-check")
    logger.debug("TFLM registers %d builtins; non-builtin kernels: %s", len(ops), found - schema)
    return ops


def _runtime_binary() -> Path:
    spec = importlib.util.find_spec("tflite_micro")  # top level only: imports nothing
    if spec is None or not spec.submodule_search_locations:
        msg = "tflite-micro is not installed; install the extra: pip install 'tinyprune[export]'"
        raise ExportError(msg, stage="op-check")
    for root in spec.submodule_search_locations:
        hits = sorted(Path(root, "python", "tflite_micro").glob("_runtime*.so"))
        if hits:
            return hits[0]
    msg = f"no _runtime*.so under {list(spec.submodule_search_locations)}; reinstall tflite-micro"
    raise ExportError(msg, stage="op-check")


def check_ops(
    model_bytes: bytes, runtime: str, target: str, layer_hints: dict[str, str] | None = None
) -> list[str]:
    """Check that every op of the model exists on the target runtime.

    Args:
        model_bytes: The ``.tflite`` flatbuffer.
        runtime: ``"tflm"`` (only TFLM builtins) or ``"litert"`` (no CUSTOM / Flex ops).
        target: Profile name, quoted in the error.
        layer_hints: Tensor or op-output names -> PyTorch layer names. A hint matches when it
            equals, or is contained in, an output tensor name of the op (onnx2tf keeps ONNX
            node names inside tensor names); without a match the output tensor name is shown.

    Returns:
        The sorted op names the model uses.

    Raises:
        ConfigError: Unknown runtime, or the bytes are not a ``.tflite`` model.
        UnsupportedOpError: Some ops are missing on the runtime (exit code 4).
    """
    if runtime not in ("tflm", "litert"):
        msg = f"unknown runtime {runtime!r} for target {target!r}; expected 'tflm' or 'litert'"
        raise ConfigError(msg)
    model = parse_tflite(model_bytes)
    supported = tflm_builtin_ops() if runtime == "tflm" else frozenset()
    problems: list[str] = []
    missing: set[str] = set()
    for op in model.ops:
        if not _unsupported(op.name, runtime, supported):
            continue
        missing.add(op.name)
        outs = [model.tensors[i].name for i in op.outputs if i >= 0]
        problems.append(
            f"  - {op.name} (op {op.index}, {_layer_of(outs, layer_hints)}): {_hint(op.name)}"
        )
    if problems:
        what = "TFLite Micro builtins" if runtime == "tflm" else "LiteRT builtins"
        msg = (
            f"the model uses ops that {what} lack, so target {target!r} (runtime {runtime}) "
            f"cannot run it; nothing was emitted:\n" + "\n".join(problems)
        )
        raise UnsupportedOpError(msg, ops=tuple(sorted(missing)), target=target)
    return sorted({op.name for op in model.ops})


def _unsupported(name: str, runtime: str, supported: frozenset[str]) -> bool:
    if runtime == "tflm":
        return name not in supported
    return name.startswith(("CUSTOM", "UNKNOWN_")) or "Flex" in name


def _hint(op_name: str) -> str:
    if op_name in _OP_HINTS:
        return _OP_HINTS[op_name]
    if "Pool3D" in op_name or "POOL_3D" in op_name.upper():
        return _POOL3D_HINT
    if "Flex" in op_name:
        return _FLEX_HINT
    return _GENERIC_HINT


def _layer_of(output_names: Sequence[str], hints: dict[str, str] | None) -> str:
    for name in output_names:
        if hints and name in hints:
            return f"layer {hints[name]!r}"
    if hints:
        for name in output_names:
            keys = [k for k in hints if k and k in name]
            if keys:
                return f"layer {hints[max(keys, key=len)]!r}"
    shown = ", ".join(repr(n) for n in output_names) or "no output"
    return f"output tensor {shown}"


@dataclass(frozen=True)
class ArenaMeasurement:
    """Tensor-arena figures of one model on the host TFLM runtime (64-bit, reference kernels).

    Attributes:
        recorded_bytes: "Arena allocation total" of TFLM's recording allocator after invoke.
        smallest_bytes: Smallest arena size, found by bisection to ARENA_STEP (8) bytes, in which
            the interpreter is created and ``invoke`` succeeds (the interpreter receives a
            16-byte-aligned heap buffer, as ``alignas(16)`` gives on the device).
        allocations: The recording allocator's full text (head, tail, per-kind usage).

    The two figures differ a little either way: Prepare needs temporaries that the
    end-of-run record no longer shows (smallest above recorded, by a few hundred bytes on
    tiny models), and the record counts alignment slack the last buffer does not need
    (smallest a few bytes below). :attr:`needed_bytes` is the larger one. A 32-bit Cortex-M
    with optimized (CMSIS-NN) kernels needs a different figure, so a header adds a margin.
    """

    recorded_bytes: int
    smallest_bytes: int
    allocations: str

    @property
    def needed_bytes(self) -> int:
        """``max(recorded_bytes, smallest_bytes)``: the arena this host run needs."""
        return max(self.recorded_bytes, self.smallest_bytes)


#: Largest arena tried on the host while looking for one that runs the model.
MAX_HOST_ARENA = 256 << 20

#: Bisection resolution: TFLM aligns its allocations to at least 8 bytes.
ARENA_STEP = 8


def measure_arena(model_bytes: bytes, timeout: float = 300) -> ArenaMeasurement:
    """Measure the arena a model needs on TFLM: recorded total, then the smallest that runs.

    Every probe runs in its own child process: after TFLM has failed to allocate, its state in
    that process cannot be trusted (later probes were seen to segfault), and a probe far below
    the need can crash the runtime outright. The search starts at the recorded total, gallops
    to a bracket and bisects it to :data:`ARENA_STEP` bytes.

    Raises:
        ExportError: TFLM cannot run the model in any arena up to :data:`MAX_HOST_ARENA`, or a
            probe crashed for another reason than a short arena.
    """
    recorded, text = _recorded_total(model_bytes, timeout)
    lo, hi = _bracket(model_bytes, recorded, timeout)
    while hi - lo > ARENA_STEP:
        mid = (lo + hi) // 2 // ARENA_STEP * ARENA_STEP
        mid = mid if lo < mid < hi else (lo + hi) // 2
        if tflm_runs_in(model_bytes, mid, timeout, known_to_run=True):
            hi = mid
        else:
            lo = mid
    logger.info("TFLM arena: recorded %d bytes, smallest working %d bytes", recorded, hi)
    return ArenaMeasurement(recorded, hi, text)


def _recorded_total(model_bytes: bytes, timeout: float) -> tuple[int, str]:
    size = max(DEFAULT_HOST_ARENA, 16 * len(model_bytes))
    while size <= MAX_HOST_ARENA:
        found = run_isolated(
            _record_child,
            bytes(model_bytes),
            size,
            timeout=time_limit(model_bytes, 1, timeout),
            stage="tflm-arena",
        )
        if found is not None:
            return found
        size *= 4
    msg = f"TFLM cannot run the model even with a {MAX_HOST_ARENA}-byte arena"
    raise ExportError(msg, stage="tflm-arena")


def _bracket(model_bytes: bytes, recorded: int, timeout: float) -> tuple[int, int]:
    """(lo, hi) with lo failing (or below the crash floor) and hi running, near ``recorded``."""
    step = max(ARENA_STEP, recorded // 16)
    if tflm_runs_in(model_bytes, recorded, timeout, known_to_run=True):
        hi = recorded
        lo = max(_CRASH_FLOOR - 1, hi - step)
        while lo >= _CRASH_FLOOR and tflm_runs_in(model_bytes, lo, timeout, known_to_run=True):
            hi, step = lo, step * 2
            lo = max(_CRASH_FLOOR - 1, hi - step)
        return lo, hi
    lo, hi = recorded, recorded + step
    while not tflm_runs_in(model_bytes, hi, timeout, known_to_run=True):
        lo, step = hi, step * 2
        hi = lo + step
        if hi > MAX_HOST_ARENA:
            msg = f"TFLM ran the model in a large arena but in none up to {MAX_HOST_ARENA} bytes"
            raise ExportError(msg, stage="tflm-arena")
    return lo, hi


def run_tflm(
    model_bytes: bytes,
    inputs: Sequence[np.ndarray] | np.ndarray,
    arena_bytes: int | None = None,
    timeout: float = 300,
) -> np.ndarray:
    """Run samples through TFLM (in a child process) and stack output 0 of each.

    :func:`run_tflm_outputs` returns every output; the arguments and errors are the same.

    Args:
        model_bytes: The ``.tflite`` flatbuffer.
        inputs: A batch of samples for input 0, already in the model's input dtype (int8 for
            a full-int8 model): shape ``(N, *input_shape[1:])`` or a list of N such samples.
        arena_bytes: Arena size; default :data:`DEFAULT_HOST_ARENA` (1 MiB).
        timeout: Seconds before the child is killed.

    Returns:
        Output 0 for every sample, shape ``(N, *output_shape[1:])``, in the output dtype.

    Raises:
        ConfigError: Inputs with the wrong dtype or shape.
        ExportError: TFLM failed (too small an arena, a failing op) or crashed.
    """
    return run_tflm_outputs(model_bytes, inputs, arena_bytes, timeout)[0]


def run_tflm_outputs(
    model_bytes: bytes,
    inputs: Sequence[np.ndarray] | np.ndarray,
    arena_bytes: int | None = None,
    timeout: float = 300,
) -> list[np.ndarray]:
    """Like :func:`run_tflm`, with one stacked array per model output (subgraph order).

    Without ``arena_bytes`` the host arena starts at :data:`DEFAULT_HOST_ARENA` and grows
    (x4, up to :data:`MAX_HOST_ARENA`) until the model fits: large clip models need more.
    """
    samples = prepare_samples(model_bytes, inputs)
    arena = DEFAULT_HOST_ARENA if arena_bytes is None else int(arena_bytes)
    timeout = time_limit(model_bytes, len(samples), timeout)
    while True:
        try:
            return run_isolated(
                _run_tflm_child, bytes(model_bytes), samples, arena, timeout=timeout, stage="tflm"
            )
        except ExportError as e:
            if not _SHORTAGE_RE.search(str(e)):
                raise
            if arena_bytes is None and arena * 4 <= MAX_HOST_ARENA:
                arena *= 4
                continue
            msg = f"a {arena}-byte arena is too small for this model (see measure_arena)\n{e}"
            raise ExportError(msg, stage="tflm") from e


def tflm_tensors(
    model_bytes: bytes, sample: np.ndarray, arena_bytes: int | None = None, timeout: float = 300
) -> dict[int, np.ndarray]:
    """Run one sample through TFLM with every tensor preserved; return them by tensor index.

    TFLM's ``kPreserveAllTensors`` config plans no buffer reuse, so after ``invoke`` every
    intermediate tensor still holds its value and ``GetTensor`` can read it. Indices are those
    of the flatbuffer's main subgraph (as in :func:`firmware_export.tflite_model.parse_tflite`).

    Args:
        model_bytes: The ``.tflite`` flatbuffer.
        sample: One sample for input 0 (with or without the batch axis), in the input dtype.
        arena_bytes: Arena size; default room for every tensor at once (nothing is reused
            when all are preserved), at least :data:`DEFAULT_HOST_ARENA`.
        timeout: Seconds before the child is killed.

    Returns:
        Tensor index -> value, for every op output tensor.

    Raises:
        ConfigError: Wrong input dtype or shape.
        ExportError: TFLM failed or crashed.
    """
    samples = prepare_samples(model_bytes, as_batch_of_one(model_bytes, sample))
    arena = _preserve_all_arena(model_bytes) if arena_bytes is None else int(arena_bytes)
    return run_isolated(
        _tflm_tensors_child,
        bytes(model_bytes),
        samples[0],
        arena,
        timeout=time_limit(model_bytes, 1, timeout),
        stage="tflm",
    )


def _preserve_all_arena(model_bytes: bytes) -> int:
    """Every tensor's bytes, 16-byte aligned, plus a quarter for TFLM's own bookkeeping."""
    tensors = parse_tflite(model_bytes).tensors
    total = sum((t.nbytes + 15) // 16 * 16 for t in tensors)
    return max(DEFAULT_HOST_ARENA, total + total // 4 + (64 << 10))


def tflm_runs_in(
    model_bytes: bytes, arena_bytes: int, timeout: float = 120, *, known_to_run: bool = False
) -> bool:
    """Whether TFLM creates the interpreter and invokes the model within ``arena_bytes``.

    Args:
        model_bytes: The ``.tflite`` flatbuffer.
        arena_bytes: Arena size to try.
        timeout: Seconds before the child is killed.
        known_to_run: The model already ran in a larger arena, so a crash here can only come
            from the small arena (the host runtime sometimes segfaults silently far below the
            need) and counts as "does not run".

    Raises:
        ExportError: The runtime crashed (a broken model, not a small arena).
    """
    try:
        return bool(
            run_isolated(
                _fits_child,
                bytes(model_bytes),
                int(arena_bytes),
                timeout=time_limit(model_bytes, 1, timeout),
                stage="tflm-arena",
            )
        )
    except ExportError as e:
        # Very small arenas make the host runtime segfault after it reports the shortage.
        if _SHORTAGE_RE.search(str(e)) or (known_to_run and "killed by SIG" in str(e)):
            return False
        raise


def prepare_samples(model_bytes: bytes, inputs: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Check a batch against input 0 of the model; return it as ``(N, 1, *shape[1:])``.

    Raises:
        ConfigError: The dtype or the per-sample shape does not match input 0.
    """
    model = parse_tflite(model_bytes)
    info = model.tensors[model.inputs[0]]
    want_dtype = np.dtype(info.dtype.lower()) if info.dtype != "BOOL" else np.dtype(bool)
    if isinstance(inputs, (list, tuple)):
        batch = np.stack([np.asarray(x) for x in inputs])
    else:
        batch = np.asarray(inputs)
    sample_shape = tuple(info.shape[1:])
    if batch.ndim == 0 or batch.shape[0] == 0:
        msg = f"no input samples given (shape {batch.shape}); pass a batch (N, *{sample_shape})"
        raise ConfigError(msg)
    if batch.dtype != want_dtype:
        msg = (
            f"inputs have dtype {batch.dtype}, the model's input {info.name!r} expects "
            f"{want_dtype}; quantize first with firmware_export.verify.quantize_input"
        )
        raise ConfigError(msg)
    if tuple(batch.shape[1:]) != sample_shape:
        msg = (
            f"inputs have shape {batch.shape}, expected (N, *{sample_shape}) for the model's "
            f"input {info.name!r} of shape {info.shape} (channels-last)"
        )
        raise ConfigError(msg)
    return np.ascontiguousarray(batch.reshape((batch.shape[0], 1, *sample_shape)))


def as_batch_of_one(model_bytes: bytes, sample: np.ndarray) -> np.ndarray:
    """Give one sample a leading batch axis unless it already has the model's full rank."""
    model = parse_tflite(model_bytes)
    rank = len(model.tensors[model.inputs[0]].shape)
    x = np.asarray(sample)
    return x[None] if x.ndim == rank - 1 else x


# --- functions that run in the child process (top level, so they can be pickled) -----------


def _interpreter(model_bytes: bytes, arena: int, preserve: bool = False) -> Any:
    from tflite_micro.python.tflite_micro import runtime

    config = (
        runtime.InterpreterConfig.kPreserveAllTensors
        if preserve
        else runtime.InterpreterConfig.kAllocationRecording
    )
    return runtime.Interpreter.from_bytes(model_bytes, arena_size=arena, intrepreter_config=config)


def _invoke_zeros(interp: Any, model_bytes: bytes) -> None:
    model = parse_tflite(model_bytes)
    for k, t in enumerate(model.inputs):
        details = interp.get_input_details(k)
        interp.set_input(np.zeros(model.tensors[t].shape, dtype=details["dtype"]), k)
    interp.invoke()


def _fits_child(model_bytes: bytes, arena: int) -> bool:
    """Create and invoke; False only when TFLM reports an arena shortage, else raise."""
    start = stderr_offset()
    try:
        _invoke_zeros(_interpreter(model_bytes, arena), model_bytes)
    except RuntimeError as e:
        printed = stderr_since(start)
        if _SHORTAGE_RE.search(printed):
            return False
        msg = (
            f"TFLM cannot prepare or run the model ({e}), and not for lack of arena "
            f"({arena} bytes); TFLM printed:\n{printed[-2000:].strip() or '(nothing)'}"
        )
        raise ExportError(msg, stage="tflm") from e
    return True


def _record_child(model_bytes: bytes, arena: int) -> tuple[int, str] | None:
    """The recording allocator's total in an arena of ``arena`` bytes (None if too small)."""
    if not _fits_child(model_bytes, arena):
        return None
    interp = _interpreter(model_bytes, arena)
    _invoke_zeros(interp, model_bytes)
    text = capture_fd2(interp.print_allocations)
    m = re.search(r"Arena allocation total (\d+) bytes", text)
    if m is None:
        msg = f"TFLM's recording allocator printed no total; it printed: {text[:400]!r}"
        raise ExportError(msg, stage="tflm-arena")
    return int(m.group(1)), text


def _run_tflm_child(model_bytes: bytes, samples: np.ndarray, arena: int) -> list[np.ndarray]:
    interp = _interpreter(model_bytes, arena)
    n_out = len(parse_tflite(model_bytes).outputs)
    runs = []
    for x in samples:
        interp.set_input(x, 0)
        interp.invoke()
        runs.append([np.array(interp.get_output(k), copy=True) for k in range(n_out)])
    return [np.concatenate([r[k] for r in runs], axis=0) for k in range(n_out)]


def _tflm_tensors_child(
    model_bytes: bytes, sample: np.ndarray, arena: int
) -> dict[int, np.ndarray]:
    interp = _interpreter(model_bytes, arena, preserve=True)
    interp.set_input(sample, 0)
    interp.invoke()
    model = parse_tflite(model_bytes)
    out: dict[int, np.ndarray] = {}
    for op in model.ops:
        for t in op.outputs:
            if t >= 0:
                out[t] = np.array(interp.GetTensor(t, 0)["tensor_data"], copy=True)
    return out
