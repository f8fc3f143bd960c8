"""The preprocessing block of model_data.h: constants a firmware build reads, and they compile."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from test_c_array import DATA, make_info

from firmware_export.c_array import to_c_source, with_preprocessing
from tinyprune.errors import ConfigError

CONTRACT = {
    "task": "rppg",
    "frames": 10,
    "height": 36,
    "width": 36,
    "channels": 6,
    "data_types": ["DiffNormalized", "Standardized"],
    "layout": "stacked",
    "fs": 30.0,
    "label_type": "DiffNormalized",
    "enlarge": 1.5,
    "detect": True,
}

MAIN = """
#include "model_data.h"
static_assert(kTinyNetPreprocFrames * kTinyNetPreprocHeight == 360, "frames x height");
static_assert(kTinyNetPreprocChannels == 6 && kTinyNetPreprocDetect, "channels");
static_assert(kTinyNetPreprocFps == 30.0f && kTinyNetPreprocEnlarge == 1.5f, "fps");
static_assert(sizeof(kTinyNetPreprocDataTypes) == 28, "DiffNormalized,Standardized");
int main() { return kTinyNetPreprocLayout[0] == 's' ? 0 : 1; }
"""


def test_block_sits_inside_the_include_guard_with_every_field() -> None:
    src = with_preprocessing(to_c_source(DATA, make_info()), "tiny_net", CONTRACT)
    block_at = src.header.index("// Preprocessing contract")
    assert src.header.index("#define TINY_NET_MODEL_DATA_H_") < block_at
    assert block_at < src.header.index("#endif  // TINY_NET_MODEL_DATA_H_")
    for key in CONTRACT:
        assert f"//   {key}: " in src.header
    assert "constexpr int kTinyNetPreprocFrames = 10;" in src.header
    assert (
        'constexpr char kTinyNetPreprocDataTypes[] = "DiffNormalized,Standardized";' in src.header
    )
    assert src.source == to_c_source(DATA, make_info()).source  # only the header changes


def test_a_header_of_another_model_is_refused() -> None:
    with pytest.raises(ConfigError, match="include-guard"):
        with_preprocessing(to_c_source(DATA, make_info()), "other_net", CONTRACT)


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
def test_constants_compile_and_hold_the_contract(tmp_path: Path) -> None:
    src = with_preprocessing(to_c_source(DATA, make_info()), "tiny_net", CONTRACT)
    (tmp_path / "model_data.h").write_text(src.header)
    (tmp_path / "model_data.cc").write_text(src.source)
    (tmp_path / "main.cc").write_text(MAIN)
    cmd = ["g++", "-std=c++17", "-Wall", "-Werror", "main.cc", "model_data.cc", "-o", "app"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert subprocess.run([str(tmp_path / "app")], timeout=10).returncode == 0
