"""Static analysis of a ``.tflite`` model: MACs, params, sparsity, activation memory, int8 lint.

The budget check and the report need figures that do not depend on a runtime: the cost of
each layer (MACs, dense and non-zero), its parameters, the bytes of its outputs, and an
analytical lower bound of the activation memory TFLM must hold at once. Everything here reads
the flatbuffer only (:func:`firmware_export.tflite_model.parse_tflite`), so it is safe on
models that would crash a native runtime.

Counting conventions (``shared/methods.md``): MACs are multiply-accumulates of the
multiplying layers; FLOPs would be 2 x MACs. Ops other than CONV_2D, DEPTHWISE_CONV_2D,
FULLY_CONNECTED, CONV_3D, TRANSPOSE_CONV and BATCH_MATMUL count 0 MACs: element-wise ops,
pooling and reductions cost one operation per element or less and are not multiply-
accumulates of weights. For unstructured sparsity the non-zero MACs of a weighted layer are
``nnz(W) x output positions`` (input positions for TRANSPOSE_CONV).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from firmware_export.tflite_model import OpInfo, TensorInfo, TfliteModel, parse_tflite

WEIGHTED_OPS = frozenset(
    {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_3D", "TRANSPOSE_CONV"}
)
# Ops whose output TFLM may place in its input's buffer (a view with a new shape): the
# lower bound counts such a pair once so that it stays a bound.
_ALIASING_OPS = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS"})
# Constants of these types are shapes, axes or paddings, not parameters (biases of the
# weighted ops are counted separately, whatever their type).
_INDEX_DTYPES = frozenset({"INT32", "INT64", "BOOL"})
MAX_SANE_SCALE = 1e6
MIN_SANE_SCALE = 1e-10


@dataclass(frozen=True)
class LayerRow:
    """Figures of one operator, in execution order."""

    index: int
    op: str
    name: str  # name of the (first) output tensor
    input_shapes: tuple[tuple[int, ...], ...]  # of the non-constant inputs
    output_shapes: tuple[tuple[int, ...], ...]
    macs: int
    params: int
    nonzero_params: int
    nonzero_macs: int
    activation_bytes: int  # bytes of the op's outputs
    torch_layer: str = ""  # PyTorch module path(s) the op comes from, when known


@dataclass(frozen=True)
class ModelAnalysis:
    """Per-layer rows plus model totals; see the module docstring for the conventions."""

    layers: tuple[LayerRow, ...]
    macs: int
    params: int
    nonzero_params: int
    nonzero_macs: int
    ops: dict[str, int] = field(hash=False)  # op name -> count
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    activation_lower_bound_bytes: int
    model_bytes: int

    @property
    def density(self) -> float:
        """Fraction of non-zero parameters (1.0 for a dense model)."""
        return self.nonzero_params / self.params if self.params else 1.0


@dataclass(frozen=True)
class LintIssue:
    """One suspicious quantization parameter, with the tensor and an op that uses it."""

    severity: str  # "error" or "warning"
    tensor: str
    op: str  # "<OP_NAME>#<index>" of the producer, else of the first consumer
    message: str


def analyze_tflite(model_bytes: bytes) -> ModelAnalysis:
    """Analyse a ``.tflite`` flatbuffer.

    Args:
        model_bytes: the model file's bytes.

    Returns:
        A :class:`ModelAnalysis` with one :class:`LayerRow` per operator.

    Raises:
        ConfigError: the bytes are not a TFLite model.
    """
    model = parse_tflite(model_bytes)
    producers = _producers(model)
    counted: set[int] = set()
    rows = tuple(_layer_row(model, op, producers, counted) for op in model.ops)
    return ModelAnalysis(
        layers=rows,
        macs=sum(r.macs for r in rows),
        params=sum(r.params for r in rows),
        nonzero_params=sum(r.nonzero_params for r in rows),
        nonzero_macs=sum(r.nonzero_macs for r in rows),
        ops=dict(Counter(op.name for op in model.ops)),
        inputs=tuple(model.tensors[i] for i in model.inputs),
        outputs=tuple(model.tensors[i] for i in model.outputs),
        activation_lower_bound_bytes=activation_lower_bound(model),
        model_bytes=len(model_bytes),
    )


def _producers(model: TfliteModel) -> dict[int, OpInfo]:
    return {t: op for op in model.ops for t in op.outputs if t >= 0}


def _weight(model: TfliteModel, tensor: int, producers: dict[int, OpInfo]) -> np.ndarray | None:
    """Constant data of ``tensor``, following a DEQUANTIZE of a constant (float16 weights)."""
    if tensor < 0:
        return None
    data = model.constant(tensor)
    if data is None and tensor in producers and producers[tensor].name == "DEQUANTIZE":
        src = producers[tensor].inputs[0]
        data = model.constant(src) if src >= 0 else None
    return data


def _shape(model: TfliteModel, tensor: int) -> tuple[int, ...]:
    return model.tensors[tensor].shape if tensor >= 0 else ()


def _elems(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def _weight_and_bias(op: OpInfo) -> tuple[int, int]:
    """Input indices of (weight, bias) of a weighted op; -1 where absent."""
    ins = list(op.inputs) + [-1, -1, -1, -1]
    if op.name == "TRANSPOSE_CONV":  # (output_shape, weights, input, [bias])
        return ins[1], ins[3]
    return ins[1], ins[2]


def _dense_macs(model: TfliteModel, op: OpInfo) -> int:
    """Dense MACs of one op (0 for ops that multiply no weights; see module docstring)."""
    out = _elems(_shape(model, op.outputs[0])) if op.outputs else 0
    if op.name not in WEIGHTED_OPS and op.name != "BATCH_MATMUL":
        return 0
    if op.name == "BATCH_MATMUL":
        return out * _matmul_depth(_shape(model, op.inputs[0]), _shape(model, op.outputs[0]))
    w = _shape(model, _weight_and_bias(op)[0])
    if not w:
        return 0
    if op.name == "CONV_2D":  # filter (cout, kh, kw, cin / groups)
        return out * w[1] * w[2] * w[3]
    if op.name == "DEPTHWISE_CONV_2D":  # filter (1, kh, kw, cout)
        return out * w[1] * w[2]
    if op.name == "FULLY_CONNECTED":  # weights (out, in); batch = out_elems / out
        return out * w[-1]
    if op.name == "CONV_3D":  # filter (kd, kh, kw, cin, cout)
        return out * w[0] * w[1] * w[2] * w[3]
    # TRANSPOSE_CONV: filter (cout, kh, kw, cin); every input element scatters kh*kw*cout
    return _elems(_shape(model, op.inputs[2])) * w[0] * w[1] * w[2]


def _matmul_depth(x: tuple[int, ...], out: tuple[int, ...]) -> int:
    """Contracted dimension K of ``x @ y`` whatever ``adj_x`` is: x is (.., M, K) or (.., K, M)."""
    if len(x) < 2 or len(out) < 2:
        return 0
    return x[-1] if x[-2] == out[-2] else x[-2]


def _layer_row(
    model: TfliteModel, op: OpInfo, producers: dict[int, OpInfo], counted: set[int]
) -> LayerRow:
    macs = _dense_macs(model, op)
    params = nonzero = 0
    nonzero_macs = macs
    for t, data in _param_tensors(model, op, producers):
        if t in counted:  # a constant shared by two ops counts once
            continue
        counted.add(t)
        params += int(data.size)
        nonzero += int(np.count_nonzero(data))
    if op.name in WEIGHTED_OPS or op.name == "BATCH_MATMUL":
        nonzero_macs = _sparse_macs(model, op, producers, macs)
    outs = [t for t in op.outputs if t >= 0]
    live_ins = [t for t in op.inputs if t >= 0 and not model.tensors[t].is_constant]
    return LayerRow(
        index=op.index,
        op=op.name,
        name=model.tensors[outs[0]].name if outs else "",
        input_shapes=tuple(model.tensors[t].shape for t in live_ins),
        output_shapes=tuple(model.tensors[t].shape for t in outs),
        macs=macs,
        params=params,
        nonzero_params=nonzero,
        nonzero_macs=nonzero_macs,
        activation_bytes=sum(model.tensors[t].nbytes for t in outs),
    )


def _param_tensors(
    model: TfliteModel, op: OpInfo, producers: dict[int, OpInfo]
) -> list[tuple[int, np.ndarray]]:
    """(tensor, data) of an op's parameters: weight + bias, or other real-valued constants."""
    if op.name == "DEQUANTIZE":  # its constant is counted by the op that consumes it
        return []
    if op.name in WEIGHTED_OPS:
        found = []
        for t in _weight_and_bias(op):
            data = _weight(model, t, producers)
            if data is not None:
                found.append((t, data))
        return found
    found = []
    for t in op.inputs:
        data = _weight(model, t, producers)
        if data is not None and model.tensors[t].dtype not in _INDEX_DTYPES:
            found.append((t, data))
    return found


def _sparse_macs(model: TfliteModel, op: OpInfo, producers: dict[int, OpInfo], macs: int) -> int:
    """nnz(W) x positions, where positions = dense MACs / |W| (exact for every weighted op)."""
    if op.name == "BATCH_MATMUL":
        w = _weight(model, op.inputs[1], producers) if len(op.inputs) > 1 else None
    else:
        w = _weight(model, _weight_and_bias(op)[0], producers)
    if w is None or w.size == 0 or macs == 0:
        return macs
    positions = macs // int(w.size)
    return int(np.count_nonzero(w)) * positions


def _lifetimes(model: TfliteModel) -> dict[int, list[int]]:
    """First and last step of every activation (graph inputs from 0, outputs to the end)."""
    last_step = max(len(model.ops) - 1, 0)
    life: dict[int, list[int]] = {t: [0, 0] for t in model.inputs}
    for op in model.ops:
        for t in op.outputs:
            if t >= 0 and t not in life:
                life[t] = [op.index, op.index]
        for t in op.inputs:
            if t >= 0 and not model.tensors[t].is_constant:
                life.setdefault(t, [0, 0])
                life[t][1] = max(life[t][1], op.index)
    for t in model.outputs:
        life.setdefault(t, [0, 0])[1] = last_step
    return life


def activation_lower_bound(model: TfliteModel) -> int:
    """Peak, over the execution order, of the bytes of simultaneously live activations.

    A tensor is live from the op that produces it (graph inputs: from the start) to its last
    consumer (graph outputs: to the end). The output of a RESHAPE / SQUEEZE / EXPAND_DIMS whose
    input dies there may share that input's buffer in TFLM, so the pair counts once. No
    memory planner can do better, so this bounds the non-persistent part of the TFLM arena
    from below (the arena also holds scratch buffers and persistent runtime structures).

    Args:
        model: a parsed model.

    Returns:
        The peak in bytes (0 for a model without ops).
    """
    life = _lifetimes(model)
    for op in model.ops:
        if op.name in _ALIASING_OPS and op.inputs and op.outputs:
            src, dst = op.inputs[0], op.outputs[0]
            if src in life and life[src][1] == op.index and dst in life:
                life[dst][0] = life[src][0]  # the output continues the input's buffer
                del life[src]
    if not model.ops:
        return sum(model.tensors[t].nbytes for t in life)
    peak = 0
    for step in range(len(model.ops)):
        live = sum(model.tensors[t].nbytes for t, (a, b) in life.items() if a <= step <= b)
        peak = max(peak, live)
    return peak


def _op_label(model: TfliteModel, tensor: int, producers: dict[int, OpInfo]) -> str:
    op = producers.get(tensor)
    if op is None:
        op = next((o for o in model.ops if tensor in o.inputs), None)
    return f"{op.name}#{op.index}" if op is not None else "(graph input)"


def lint_int8(model: TfliteModel | bytes) -> list[LintIssue]:
    """Flag quantization parameters that make an int8 model wrong or useless.

    Errors: a scale that is not finite, ``<= 0`` or above ``MAX_SANE_SCALE`` (a calibration
    that saw inf/NaN or nothing); a zero point outside the int8 range; the int8 weight of
    a conv / depthwise / fully-connected op with a non-zero zero point (the TFLite int8 spec
    makes those weights symmetric; constant operands of ADD or MUL may be asymmetric).
    Warnings: a scale below ``MIN_SANE_SCALE``; an int8 activation with zero point 127, whose
    real range is entirely <= 0 (likely saturated, e.g. a dead layer or a sign error).

    Args:
        model: a parsed model or the bytes of a ``.tflite`` file.

    Returns:
        The issues found, in tensor order (empty for a clean model).
    """
    if isinstance(model, (bytes, bytearray)):
        model = parse_tflite(bytes(model))
    producers = _producers(model)
    weights = {op.inputs[1] for op in model.ops if op.name in WEIGHTED_OPS and len(op.inputs) > 1}
    issues: list[LintIssue] = []
    for t in model.tensors:
        for severity, msg in _tensor_problems(t, t.index in weights):
            issues.append(LintIssue(severity, t.name, _op_label(model, t.index, producers), msg))
    return issues


def _tensor_problems(t: TensorInfo, is_weight: bool) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    bad = [s for s in t.scale if not math.isfinite(s) or s <= 0 or s > MAX_SANE_SCALE]
    if bad:
        problems.append(
            (
                "error",
                f"absurd quantization scale {bad[0]!r} (expected a finite "
                f"value in (0, {MAX_SANE_SCALE:g}]); recalibrate with representative "
                "data that has no inf/NaN",
            )
        )
    elif any(s < MIN_SANE_SCALE for s in t.scale):
        problems.append(
            (
                "warning",
                f"tiny quantization scale {min(t.scale)!r}: the tensor "
                "is (nearly) constant zero in the calibration data",
            )
        )
    if t.dtype != "INT8" or not t.zero_point:
        return problems
    if any(z < -128 or z > 127 for z in t.zero_point):
        problems.append(
            ("error", f"zero point {t.zero_point[0]} outside the int8 range [-128, 127]")
        )
    elif is_weight and any(z != 0 for z in t.zero_point):
        problems.append(
            (
                "error",
                "int8 constant with a non-zero zero point; TFLite's int8 "
                "spec requires symmetric weights (zero point 0)",
            )
        )
    elif not t.is_constant and any(z == 127 for z in t.zero_point):
        problems.append(
            (
                "warning",
                "zero point at the int8 edge (127): the real range is "
                "entirely <= 0, likely saturated; check the calibration data",
            )
        )
    return problems


#: The slowest host speed (MACs per second) assumed when a native runtime's child process gets
#: its time limit: TFLM's and LiteRT's reference kernels are far from optimised, and full-size
#: clip models (PhysNet: 17.6 G MACs per clip) need minutes per run on a loaded 2-core host.
SLOWEST_HOST_MACS_PER_S = 1e7


def time_limit(model_bytes: bytes, runs: int, base: float) -> float:
    """Seconds a child process may take for ``runs`` invocations: ``base`` plus a MAC budget."""
    try:
        macs = analyze_tflite(model_bytes).macs
    except Exception:  # noqa: BLE001 - a model the analysis cannot read keeps the base limit
        return base
    return base + runs * macs / SLOWEST_HOST_MACS_PER_S
