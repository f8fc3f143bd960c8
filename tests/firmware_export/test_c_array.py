"""Tests of firmware_export.c_array: round trip, identifiers, and that real compilers accept it."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from firmware_export.c_array import (
    CModelInfo,
    TensorSpec,
    c_array_bytes,
    camel_name,
    sanitize_identifier,
    tflm_method,
    to_c_source,
)
from tinyprune.errors import ConfigError, UnsupportedOpError

DATA = bytes(range(256)) * 3 + b"\x01\x02\x03"  # 771 bytes: a partial last line


def make_info(name: str = "tiny_net", ops: tuple[str, ...] = ("CONV_2D", "FULLY_CONNECTED")):
    return CModelInfo(
        name=name,
        inputs=(TensorSpec((1, 8, 8, 1), "INT8", 0.00392156886, -128),),
        outputs=(TensorSpec((1, 10), "INT8", 0.1171875, 12),),
        arena_bytes=22776,
        arena_margin_bytes=2048,
        arena_margin_reason="32-bit pointers and\nCMSIS-NN scratch buffers \\",
        tflm_ops=ops,
        tinyprune_version="0.1.0",
        sha256=hashlib.sha256(DATA).hexdigest(),
    )


def write(tmp_path: Path, name: str = "tiny_net", ops=("CONV_2D", "FULLY_CONNECTED")) -> Path:
    src = to_c_source(DATA, make_info(name, ops))
    (tmp_path / "model_data.h").write_text(src.header)
    (tmp_path / "model_data.cc").write_text(src.source)
    return tmp_path / "model_data.cc"


def test_round_trip_and_layout() -> None:
    src = to_c_source(DATA, make_info())
    assert c_array_bytes(src.source) == DATA
    assert "alignas(16) const unsigned char g_tiny_net_model_data[] = {" in src.source
    assert f"const unsigned int g_tiny_net_model_data_len = {len(DATA)};" in src.source
    assert '#include "model_data.h"' in src.source
    rows = [ln for ln in src.source.splitlines() if ln.startswith("  0x")]
    assert all(ln.count("0x") == 12 for ln in rows[:-1]) and rows[-1].count("0x") == 771 % 12
    assert "extern const unsigned char g_tiny_net_model_data[];" in src.header
    assert "#ifndef TINY_NET_MODEL_DATA_H_" in src.header


def test_header_constants() -> None:
    h = to_c_source(DATA, make_info()).header
    assert "constexpr unsigned int kTinyNetArenaSize = 24824;" in h  # 22776 + 2048
    assert "constexpr unsigned int kTinyNetArenaMeasuredSize = 22776;" in h
    assert "constexpr int kTinyNetInputDims[] = {1, 8, 8, 1};" in h
    assert "constexpr int kTinyNetInputElements = 64;" in h
    assert "constexpr int kTinyNetOutputZeroPoint = 12;" in h
    assert "constexpr float kTinyNetOutputScale = 0.1171875f;" in h
    assert "CMSIS-NN scratch" in h and make_info().sha256 in h
    assert "constexpr unsigned int kTinyNetOpCount = 2;" in h


def test_parse_back_detects_a_wrong_length() -> None:
    src = to_c_source(DATA, make_info()).source.replace("_len = 771", "_len = 770")
    with pytest.raises(ConfigError, match="771 bytes but its _len constant says 770"):
        c_array_bytes(src)
    with pytest.raises(ConfigError, match="no 'g_<name>_model_data"):
        c_array_bytes("int x;")


@pytest.mark.parametrize(
    ("name", "ident", "camel"),
    [
        ("tiny_net", "tiny_net", "TinyNet"),
        ("3d-PhysNet v2!", "m_3d_PhysNet_v2", "M3dPhysNetV2"),
        ("class", "class_", "Class"),
        ("__a__b__", "a_b", "AB"),
        ("ü", "model", "Model"),
        ("int", "int_", "Int"),
    ],
)
def test_sanitize_identifier(name: str, ident: str, camel: str) -> None:
    assert sanitize_identifier(name) == ident
    assert camel_name(ident) == camel
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", ident) and "__" not in ident


@pytest.mark.parametrize(
    ("op", "method"),
    [
        ("CONV_2D", "AddConv2D"),
        ("DEPTHWISE_CONV_2D", "AddDepthwiseConv2D"),
        ("FULLY_CONNECTED", "AddFullyConnected"),
        ("MAX_POOL_2D", "AddMaxPool2D"),
        ("L2_POOL_2D", "AddL2Pool2D"),
        ("BATCH_TO_SPACE_ND", "AddBatchToSpaceNd"),
        ("PADV2", "AddPadV2"),
        ("SELECT_V2", "AddSelectV2"),
        ("BATCH_MATMUL", "AddBatchMatMul"),
        ("UNIDIRECTIONAL_SEQUENCE_LSTM", "AddUnidirectionalSequenceLSTM"),
        ("CUMSUM", "AddCumSum"),
        ("RELU6", "AddRelu6"),
        ("ADD_N", "AddAddN"),
        ("LOG_SOFTMAX", "AddLogSoftmax"),
    ],
)
def test_tflm_method_names(op: str, method: str) -> None:
    assert tflm_method(op) == method


def test_unsupported_op_is_named() -> None:
    with pytest.raises(UnsupportedOpError, match="'CONV_3D'") as err:
        to_c_source(DATA, make_info(ops=("CONV_3D",)))
    assert err.value.ops == ("CONV_3D",) and err.value.exit_code == 4


def _compile(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
def test_host_compile_without_tflm(tmp_path: Path) -> None:
    cc = write(tmp_path, name="3d net")
    _compile(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-c", cc.name], tmp_path)
    nm = subprocess.run(["nm", "model_data.o"], cwd=tmp_path, capture_output=True, text=True)
    assert re.search(r" R g_m_3d_net_model_data\b", nm.stdout)  # external, read-only
    assert re.search(r" R g_m_3d_net_model_data_len\b", nm.stdout)


STUB_RESOLVER = """
#ifndef TENSORFLOW_LITE_MICRO_MICRO_MUTABLE_OP_RESOLVER_H_
#define TENSORFLOW_LITE_MICRO_MICRO_MUTABLE_OP_RESOLVER_H_
enum TfLiteStatus { kTfLiteOk = 0, kTfLiteError = 1 };
namespace tflite {
template <unsigned int N> class MicroMutableOpResolver {
 public:
  unsigned int n = 0;
  TfLiteStatus AddConv2D() { return ++n <= N ? kTfLiteOk : kTfLiteError; }
  TfLiteStatus AddFullyConnected() { return ++n <= N ? kTfLiteOk : kTfLiteError; }
};
}  // namespace tflite
#endif
"""

USER_MAIN = """
#include "model_data.h"
int main() {
  TinyNetOpResolver resolver;
  if (RegisterTinyNetOps(resolver) != kTfLiteOk) return 1;
  if (resolver.n != kTinyNetOpCount) return 2;
  if (g_tiny_net_model_data_len != 771 || g_tiny_net_model_data[770] != 3) return 3;
  static_assert(kTinyNetArenaSize == 24824, "arena");
  return 0;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
def test_resolver_helper_compiles_and_registers_with_tflm_present(tmp_path: Path) -> None:
    stub = tmp_path / "tensorflow/lite/micro/micro_mutable_op_resolver.h"
    stub.parent.mkdir(parents=True)
    stub.write_text(STUB_RESOLVER)
    write(tmp_path)
    (tmp_path / "main.cc").write_text(USER_MAIN)
    _compile(
        ["g++", "-std=c++17", "-Wall", "-Werror", "-I.", "main.cc", "model_data.cc", "-o", "app"],
        tmp_path,
    )
    assert subprocess.run([str(tmp_path / "app")], timeout=10, check=False).returncode == 0


@pytest.mark.skipif(shutil.which("arm-none-eabi-g++") is None, reason="no ARM toolchain")
def test_cortex_m4_compile_places_aligned_array_in_rodata(tmp_path: Path) -> None:
    cc = write(tmp_path)
    _compile(
        [
            "arm-none-eabi-g++",
            "-mcpu=cortex-m4",
            "-mthumb",
            "-mfloat-abi=hard",
            "-mfpu=fpv4-sp-d16",
            "-Os",
            "-std=c++17",
            "-Wall",
            "-Werror",
            "-c",
            cc.name,
        ],
        tmp_path,
    )
    syms = subprocess.run(
        ["arm-none-eabi-readelf", "-sW", "model_data.o"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    sections = subprocess.run(
        ["arm-none-eabi-readelf", "-SW", "model_data.o"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    row = next(ln.split() for ln in syms.splitlines() if ln.endswith(" g_tiny_net_model_data"))
    value, size, bind, ndx = int(row[1], 16), int(row[2]), row[4], row[6]
    assert size == len(DATA) and bind == "GLOBAL" and value % 16 == 0
    sec = next(ln for ln in sections.splitlines() if re.search(rf"\[\s*{ndx}\]", ln))
    assert ".rodata" in sec
    align = int(sec.split()[-1])
    assert align % 16 == 0
