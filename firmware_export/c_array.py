"""Emit a model as C++ sources for TFLM firmware (``model_data.h`` / ``model_data.cc``).

TFLM users compile the model into flash as a 16-byte aligned ``const unsigned char`` array
and need, beside it, what the model expects: input/output shapes, scales and zero points,
the arena size to allocate and the ops to register. This module turns bytes plus that
metadata into the two texts, with no file IO (the caller writes them). The header compiles
without TFLM; the op-registration helper appears only when TFLM's resolver header is
reachable (``__has_include``) or already included.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tinyprune.errors import ConfigError, UnsupportedOpError

BYTES_PER_LINE = 12
TFLM_RESOLVER_HEADER = "tensorflow/lite/micro/micro_mutable_op_resolver.h"
TFLM_RESOLVER_GUARD = "TENSORFLOW_LITE_MICRO_MICRO_MUTABLE_OP_RESOLVER_H_"

# Builtins with a MicroMutableOpResolver::Add...() method (checked against TFLM's
# micro_mutable_op_resolver.h and the Register_* symbols of the tflite-micro wheel).
TFLM_BUILTINS = frozenset(
    [
        "ABS",
        "ADD",
        "ADD_N",
        "ARG_MAX",
        "ARG_MIN",
        "ASSIGN_VARIABLE",
        "AVERAGE_POOL_2D",
        "BATCH_MATMUL",
        "BATCH_TO_SPACE_ND",
        "BROADCAST_ARGS",
        "BROADCAST_TO",
        "CALL_ONCE",
        "CAST",
        "CEIL",
        "CONCATENATION",
        "CONV_2D",
        "COS",
        "CUMSUM",
        "DEPTH_TO_SPACE",
        "DEPTHWISE_CONV_2D",
        "DEQUANTIZE",
        "DIV",
        "DYNAMIC_UPDATE_SLICE",
        "ELU",
        "EMBEDDING_LOOKUP",
        "EQUAL",
        "EXP",
        "EXPAND_DIMS",
        "FILL",
        "FLOOR",
        "FLOOR_DIV",
        "FLOOR_MOD",
        "FULLY_CONNECTED",
        "GATHER",
        "GATHER_ND",
        "GREATER",
        "GREATER_EQUAL",
        "HARD_SWISH",
        "IF",
        "L2_NORMALIZATION",
        "L2_POOL_2D",
        "LEAKY_RELU",
        "LESS",
        "LESS_EQUAL",
        "LOG",
        "LOGICAL_AND",
        "LOGICAL_NOT",
        "LOGICAL_OR",
        "LOGISTIC",
        "LOG_SOFTMAX",
        "MAXIMUM",
        "MAX_POOL_2D",
        "MEAN",
        "MINIMUM",
        "MIRROR_PAD",
        "MUL",
        "NEG",
        "NOT_EQUAL",
        "PACK",
        "PAD",
        "PADV2",
        "PRELU",
        "QUANTIZE",
        "READ_VARIABLE",
        "REDUCE_MAX",
        "REDUCE_MIN",
        "RELU",
        "RELU6",
        "RESHAPE",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "REVERSE_V2",
        "ROUND",
        "RSQRT",
        "SELECT_V2",
        "SHAPE",
        "SIN",
        "SLICE",
        "SOFTMAX",
        "SPACE_TO_BATCH_ND",
        "SPACE_TO_DEPTH",
        "SPLIT",
        "SPLIT_V",
        "SQRT",
        "SQUARE",
        "SQUARED_DIFFERENCE",
        "SQUEEZE",
        "STRIDED_SLICE",
        "SUB",
        "SUM",
        "SVDF",
        "TANH",
        "TRANSPOSE",
        "TRANSPOSE_CONV",
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "UNPACK",
        "VAR_HANDLE",
        "WHILE",
        "ZEROS_LIKE",
    ]
)

# Where TFLM's method name is not the CamelCase of the builtin name.
_METHOD_EXCEPTIONS = {
    "BATCH_MATMUL": "AddBatchMatMul",
    "CUMSUM": "AddCumSum",
    "PADV2": "AddPadV2",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
}

CPP_KEYWORDS = frozenset(
    [
        "alignas",
        "alignof",
        "and",
        "and_eq",
        "asm",
        "auto",
        "bitand",
        "bitor",
        "bool",
        "break",
        "case",
        "catch",
        "char",
        "char8_t",
        "char16_t",
        "char32_t",
        "class",
        "compl",
        "concept",
        "const",
        "consteval",
        "constexpr",
        "constinit",
        "const_cast",
        "continue",
        "co_await",
        "co_return",
        "co_yield",
        "decltype",
        "default",
        "delete",
        "do",
        "double",
        "dynamic_cast",
        "else",
        "enum",
        "explicit",
        "export",
        "extern",
        "false",
        "float",
        "for",
        "friend",
        "goto",
        "if",
        "inline",
        "int",
        "long",
        "mutable",
        "namespace",
        "new",
        "noexcept",
        "not",
        "not_eq",
        "nullptr",
        "operator",
        "or",
        "or_eq",
        "private",
        "protected",
        "public",
        "register",
        "reinterpret_cast",
        "requires",
        "return",
        "short",
        "signed",
        "sizeof",
        "static",
        "static_assert",
        "static_cast",
        "struct",
        "switch",
        "template",
        "this",
        "thread_local",
        "throw",
        "true",
        "try",
        "typedef",
        "typeid",
        "typename",
        "union",
        "unsigned",
        "using",
        "virtual",
        "void",
        "volatile",
        "wchar_t",
        "while",
        "xor",
        "xor_eq",
        "restrict",
        "_Bool",
    ]
)


@dataclass(frozen=True)
class TensorSpec:
    """What firmware needs to feed or read one model input/output."""

    shape: tuple[int, ...]
    dtype: str  # schema name: INT8, FLOAT32, ...
    scale: float = 0.0  # 0.0 for a tensor that is not quantized
    zero_point: int = 0
    label: str = ""  # e.g. "out1 = forward()[1]" (documented in the header)


@dataclass(frozen=True)
class CModelInfo:
    """Metadata documented in, and turned into constants of, the generated header."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    arena_bytes: int  # measured on this host (TFLM recording allocator / bisection)
    arena_margin_bytes: int
    arena_margin_reason: str
    tflm_ops: tuple[str, ...]  # builtin names, e.g. ("CONV_2D", "FULLY_CONNECTED")
    tinyprune_version: str
    sha256: str
    # (name, bytes, what) parts of the device arena (head, scratch, tail, margin); when given,
    # kArenaSize is their sum and arena_bytes is the host's measured smallest arena
    arena_parts: tuple[tuple[str, int, str], ...] = ()

    def __post_init__(self) -> None:
        """Reject figures that would make the header lie."""
        if self.arena_bytes <= 0 or self.arena_margin_bytes < 0:
            msg = (
                f"arena_bytes must be > 0 and arena_margin_bytes >= 0, got "
                f"{self.arena_bytes} and {self.arena_margin_bytes}; pass the measured arena"
            )
            raise ConfigError(msg)
        if not self.inputs or not self.outputs:
            msg = "CModelInfo needs at least one input and one output TensorSpec"
            raise ConfigError(msg)
        if any(b < 0 or not n.isidentifier() for n, b, _ in self.arena_parts):
            msg = f"arena parts need identifier names and sizes >= 0, got {self.arena_parts}"
            raise ConfigError(msg)


@dataclass(frozen=True)
class CSource:
    """The two generated texts."""

    header: str
    source: str


def sanitize_identifier(name: str) -> str:
    """Turn any model name into a valid, non-reserved C/C++ identifier in lower_snake case.

    Non-alphanumeric ASCII characters become ``_``, runs of ``_`` collapse (a double
    underscore is reserved in C++), a leading digit gets an ``m_`` prefix and a C++ keyword
    gets a ``_`` suffix. An empty result becomes ``model``.
    """
    ident = re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_")
    ident = re.sub(r"_+", "_", ident) or "model"
    if ident[0].isdigit():
        ident = f"m_{ident}"
    if ident in CPP_KEYWORDS:
        ident = f"{ident}_"
    return ident


def camel_name(ident: str) -> str:
    """``my_net_v2`` -> ``MyNetV2`` (for ``k<Name>...`` constants)."""
    return "".join(p[:1].upper() + p[1:] for p in ident.split("_") if p)


def tflm_method(op: str) -> str:
    """``MicroMutableOpResolver`` method that registers builtin ``op`` (CONV_2D -> AddConv2D).

    Raises:
        UnsupportedOpError: TFLM has no resolver method for ``op``.
    """
    if op not in TFLM_BUILTINS:
        msg = (
            f"TFLM's MicroMutableOpResolver has no method for op {op!r}; rewrite the "
            "model to TFLM builtins (see firmware_export.rewrite) or target LiteRT"
        )
        raise UnsupportedOpError(msg, ops=(op,), target="tflm", stage="c-array")
    if op in _METHOD_EXCEPTIONS:
        return _METHOD_EXCEPTIONS[op]
    parts = op.split("_")
    return "Add" + "".join(p.upper() if p[:1].isdigit() else p.capitalize() for p in parts)


def _hex_lines(data: bytes) -> list[str]:
    return [
        "  " + ", ".join(f"0x{b:02x}" for b in data[i : i + BYTES_PER_LINE]) + ","
        for i in range(0, len(data), BYTES_PER_LINE)
    ]


def _float_literal(x: float) -> str:
    text = f"{x:.9g}"
    if not any(c in text for c in ".en"):
        text += ".0"
    return f"{text}f"


def _tensor_constants(prefix: str, spec: TensorSpec, index: int) -> list[str]:
    dims = ", ".join(str(d) for d in spec.shape) or "1"
    elems = 1
    for d in spec.shape:
        elems *= d
    return [
        f"// {spec.dtype}, shape ({', '.join(str(d) for d in spec.shape)})"
        + ("" if spec.scale else ", not quantized")
        + (f"; {_one_line(spec.label)}" if spec.label else ""),
        f"constexpr int {prefix}Index = {index};  // interpreter index",
        f"constexpr int {prefix}Rank = {len(spec.shape)};",
        f"constexpr int {prefix}Dims[] = {{{dims}}};",
        f"constexpr int {prefix}Elements = {elems};",
        f"constexpr float {prefix}Scale = {_float_literal(spec.scale)};",
        f"constexpr int {prefix}ZeroPoint = {spec.zero_point};",
        f'constexpr char {prefix}Type[] = "{spec.dtype.lower()}";',
        "",
    ]


def _io_constants(camel: str, kind: str, specs: Sequence[TensorSpec]) -> list[str]:
    """Constants per input/output: index 0 is ``k<Name><Kind>...``, index i ``...<Kind>i...``;
    ``...Index`` is the position to pass to the interpreter's ``input(i)`` / ``output(i)``.
    """
    lines = [f"constexpr int k{camel}{kind}Count = {len(specs)};"]
    for i, spec in enumerate(specs):
        lines += _tensor_constants(f"k{camel}{kind}{i if i else ''}", spec, i)
    return lines


def _resolver_block(camel: str, ops: Sequence[str]) -> list[str]:
    unique = sorted(set(ops))
    calls = [
        f"  if (resolver.{tflm_method(op)}() != kTfLiteOk) return kTfLiteError;" for op in unique
    ]
    return [
        f"// TFLM ops this model needs: {', '.join(unique) or '(none)'}",
        f"constexpr unsigned int k{camel}OpCount = {len(unique)};",
        "",
        "#if defined(__has_include)",
        f'#if __has_include("{TFLM_RESOLVER_HEADER}")',
        f'#include "{TFLM_RESOLVER_HEADER}"',
        "#endif",
        "#endif",
        f"#ifdef {TFLM_RESOLVER_GUARD}",
        f"using {camel}OpResolver = tflite::MicroMutableOpResolver<k{camel}OpCount>;",
        "",
        "// Registers every op of the model; returns kTfLiteError if the resolver is full.",
        "template <unsigned int tOpCount>",
        f"inline TfLiteStatus Register{camel}Ops("
        "tflite::MicroMutableOpResolver<tOpCount>& resolver) {",
        f'  static_assert(tOpCount >= k{camel}OpCount, "op resolver too small for this model");',
        *calls,
        "  return kTfLiteOk;",
        "}",
        f"#endif  // {TFLM_RESOLVER_GUARD}",
    ]


def _one_line(text: str) -> str:
    """Text safe inside a ``//`` comment (no line breaks)."""
    return " ".join(str(text).split())


def _arena_lines(camel: str, info: CModelInfo) -> tuple[list[str], list[str]]:
    """Header comment and constants of the arena: measured + margin, or the computed parts."""
    if not info.arena_parts:
        total = info.arena_bytes + info.arena_margin_bytes
        comment = [
            f"// Arena: {info.arena_bytes} bytes measured on the host + "
            f"{info.arena_margin_bytes} bytes margin ({_one_line(info.arena_margin_reason)}).",
        ]
        constants = [
            f"constexpr unsigned int k{camel}ArenaMeasuredSize = {info.arena_bytes};",
            f"constexpr unsigned int k{camel}ArenaMarginSize = {info.arena_margin_bytes};",
            f"constexpr unsigned int k{camel}ArenaSize = {total};  // measured + margin",
        ]
        return comment, constants
    total = sum(b for _, b, _ in info.arena_parts)
    names = " + ".join(n.lower() for n, _, _ in info.arena_parts)
    comment = [f"// Arena for a 32-bit Cortex-M: {total} bytes = {names}:"]
    comment += [f"//   {n.lower()} {b} B: {_one_line(w)}" for n, b, w in info.arena_parts]
    comment.append(
        f"// The same model needs {info.arena_bytes} bytes in TFLM on the 64-bit build host "
        "(measured, larger pointers): k" + camel + "ArenaHostSize."
    )
    constants = [
        f"constexpr unsigned int k{camel}Arena{n}Size = {b};" for n, b, _ in info.arena_parts
    ]
    constants += [
        f"constexpr unsigned int k{camel}ArenaSize = {total};  // {names}",
        f"constexpr unsigned int k{camel}ArenaHostSize = {info.arena_bytes};  // measured",
    ]
    return comment, constants


def _header(ident: str, data_len: int, info: CModelInfo) -> str:
    camel = camel_name(ident)
    guard = f"{ident.upper()}_MODEL_DATA_H_"
    comment, constants = _arena_lines(camel, info)
    lines = [
        f"// Model {info.name!r} for TensorFlow Lite Micro, generated by tinyprune "
        f"{_one_line(info.tinyprune_version)}. Do not edit.",
        f"// sha256 of the .tflite: {_one_line(info.sha256)}",
        f"// Size: {data_len} bytes. Ops: {', '.join(sorted(set(info.tflm_ops)))}",
        *comment,
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        f"extern const unsigned char g_{ident}_model_data[];  // 16-byte aligned, in flash",
        f"extern const unsigned int g_{ident}_model_data_len;",
        "",
        f"constexpr unsigned int k{camel}ModelSize = {data_len};",
        *constants,
        "",
        *_io_constants(camel, "Input", info.inputs),
        *_io_constants(camel, "Output", info.outputs),
        *_resolver_block(camel, info.tflm_ops),
        "",
        f"#endif  // {guard}",
        "",
    ]
    return "\n".join(lines)


def to_c_source(
    model_bytes: bytes, info: CModelInfo, *, header_name: str = "model_data.h"
) -> CSource:
    """Render ``model_bytes`` as a C++ header and source that TFLM firmware compiles.

    Args:
        model_bytes: the ``.tflite`` file's bytes.
        info: shapes, quantization, arena figures and ops to document and export.
        header_name: the file name the ``.cc`` includes.

    Returns:
        A :class:`CSource`; the array is ``g_<name>_model_data`` with ``g_<name>_model_data_len``.

    Raises:
        ConfigError: empty model bytes or bad metadata.
        UnsupportedOpError: an op without a TFLM resolver method.
    """
    if not model_bytes:
        msg = "no model bytes to emit; pass the .tflite file's content"
        raise ConfigError(msg)
    ident = sanitize_identifier(info.name)
    header = _header(ident, len(model_bytes), info)
    source = "\n".join(
        [
            f"// Model {info.name!r} (sha256 {_one_line(info.sha256)}), generated by tinyprune "
            f"{_one_line(info.tinyprune_version)}. Do not edit.",
            f'#include "{header_name}"',
            "",
            f"alignas(16) const unsigned char g_{ident}_model_data[] = {{",
            *_hex_lines(model_bytes),
            "};",
            f"const unsigned int g_{ident}_model_data_len = {len(model_bytes)};",
            "",
        ]
    )
    return CSource(header=header, source=source)


def c_array_bytes(source: str) -> bytes:
    """Parse the model bytes back out of a generated ``.cc`` (round-trip check).

    Raises:
        ConfigError: no ``g_*_model_data`` array, or its ``_len`` disagrees with its content.
    """
    m = re.search(r"g_(\w+)_model_data\[\]\s*=\s*\{(.*?)\};", source, flags=re.S)
    if m is None:
        msg = "no 'g_<name>_model_data[] = {...};' array in the source; is it a tinyprune .cc?"
        raise ConfigError(msg)
    data = bytes(int(h, 16) for h in re.findall(r"0x([0-9a-fA-F]{2})", m.group(2)))
    n = re.search(rf"g_{m.group(1)}_model_data_len\s*=\s*(\d+)", source)
    if n is not None and int(n.group(1)) != len(data):
        msg = f"array holds {len(data)} bytes but its _len constant says {n.group(1)}"
        raise ConfigError(msg)
    return data


def preprocessing_lines(camel: str, contract: Mapping[str, Any]) -> list[str]:
    """Header comment and ``k<Name>Preproc*`` constants of the model's input contract.

    ``contract`` is the JSON form of ``tinyprune.runtime.contract.PreprocessingContract``
    (frames, face size, data types, layout, frame rate, label type, crop rule): what firmware
    must feed the model, as ``report.json["preprocessing"]`` records it.
    """
    lines = [
        "// Preprocessing contract: the input this model was trained on (build it the same way)."
    ]
    lines += [f"//   {k}: {_one_line(json.dumps(v))}" for k, v in contract.items()]
    p = f"k{camel}Preproc"
    for key in ("frames", "height", "width", "channels"):
        if isinstance(contract.get(key), int):
            lines.append(f"constexpr int {p}{key.capitalize()} = {contract[key]};")
    for key, name in (("fs", "Fps"), ("enlarge", "Enlarge")):
        if isinstance(contract.get(key), int | float):
            lines.append(f"constexpr float {p}{name} = {_float_literal(float(contract[key]))};")
    if isinstance(contract.get("detect"), bool):
        lines.append(f"constexpr bool {p}Detect = {str(contract['detect']).lower()};")
    for key, name in (("data_types", "DataTypes"), ("layout", "Layout"), ("label_type", "Label")):
        value = contract.get(key)
        if isinstance(value, str | list | tuple):
            text = value if isinstance(value, str) else ",".join(str(v) for v in value)
            lines.append(f"constexpr char {p}{name}[] = {json.dumps(_one_line(text))};")
    return lines


def with_preprocessing(sources: CSource, name: str, contract: Mapping[str, Any]) -> CSource:
    """``sources`` whose header also documents ``contract`` (just before its include guard end).

    Args:
        sources: What :func:`to_c_source` rendered for the model called ``name``.
        name: The model name given to :func:`to_c_source` (``CModelInfo.name``).
        contract: The input contract (see :func:`preprocessing_lines`).
    """
    ident = sanitize_identifier(name)
    end = f"#endif  // {ident.upper()}_MODEL_DATA_H_"
    if end not in sources.header:
        msg = f"header of {name!r} has no include-guard end {end!r}; render it with to_c_source"
        raise ConfigError(msg)
    block = "\n".join(preprocessing_lines(camel_name(ident), contract))
    return CSource(sources.header.replace(end, f"{block}\n\n{end}"), sources.source)
