"""The zoo's 3-D rPPG nets export to LiteRT with verified float conversion, and fail fast on TFLM.

PhysNet's temporal upsampling is a biased ConvTranspose3d (BN folded in); onnx2tf 1.28 drops
that bias unless the ONNX rewrite moves it into an Add, which ``onnx_vs_tflite_float`` catches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from firmware_export import ExportOptions, export
from tinyprune.errors import UnsupportedOpError
from tinyprune.models import create_model

pytestmark = pytest.mark.tf

_OPTIONS = ExportOptions(calib_cap=8, verify_samples=4)


def _calib(n: int = 8) -> np.ndarray:
    return np.random.default_rng(0).random((n, 3, 8, 16, 16), dtype=np.float32)


@pytest.mark.parametrize("name", ["test_physnet", "test_deeprppg"])
def test_3d_rppg_net_exports_to_rpi4_and_verifies(name: str, tmp_path: Path) -> None:
    result = export(
        create_model(name), _calib(), target="rpi4", out_dir=tmp_path / name, options=_OPTIONS
    )
    verify = result.report["verify"]
    assert verify["torch_vs_onnxruntime"]["passed"]
    assert verify["onnx_vs_tflite_float"]["passed"], verify["onnx_vs_tflite_float"]
    assert verify["onnx_vs_tflite_float"]["max_abs"] < 1e-5
    assert "CONV_3D" in result.report["ops"]
    if name == "test_physnet":
        assert any(r.startswith("convtranspose3d-bias-add:") for r in result.report["rewrites"])
        assert "CONV_3D_TRANSPOSE" in result.report["ops"]


@pytest.mark.parametrize("name", ["test_physnet", "test_deeprppg"])
def test_3d_rppg_net_on_cortex_m4_names_conv3d(name: str, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedOpError) as info:
        export(
            create_model(name),
            _calib(2),
            target="cortex-m4",
            out_dir=tmp_path / "run",
            options=_OPTIONS,
        )
    assert info.value.exit_code == 4
    assert "CONV_3D" in info.value.ops and "CONV_3D" in str(info.value)
    assert not (tmp_path / "run").exists()
