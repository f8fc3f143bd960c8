"""The architectures people bring export with verified outputs through TFLM (Python API)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from arch_styles import STYLES, build

from firmware_export import export

pytestmark = pytest.mark.tf


@pytest.mark.parametrize("style", sorted(STYLES))
def test_style_exports_and_verifies_on_tflm(style: str, tmp_path: Path) -> None:
    calib = np.random.default_rng(0).random((12, 3, 32, 32), dtype=np.float32)
    result = export(build(style), calib, target="cortex-m7", out_dir=tmp_path / style)
    verify = result.report["verify"]
    assert verify["torch_vs_onnxruntime"]["passed"] and verify["onnx_vs_tflite_float"]["passed"]
    assert verify["int8_vs_float"]["cos"] > 0.99
    assert verify["tflm_vs_litert_ref"]["max_abs"] == 0
    assert (tmp_path / style / "model_data.cc").is_file()
    assert "PADV2" not in result.report["ops"]  # padded max-pool after ReLU pads with zero
