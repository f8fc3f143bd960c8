"""The zoo's 3-D rPPG nets export fully int8: to Cortex-M (TFLM) through the exact 3-D -> 2-D
rewrite (time as batch), to LiteRT with or without it; ``--rewrite-3d off`` keeps today's path.

The nets are briefly trained on synthetic clips (``field_nets_3d``) so that their outputs
depend on the input: the centred int8-vs-float cosine then measures what int8 keeps of that.
PhysNet's temporal upsampling is a biased ConvTranspose3d (BN folded in); without the rewrite
onnx2tf 1.28 drops that bias unless the ONNX rewrite moves it into an Add, which
``onnx_vs_tflite_float`` catches.
"""

from __future__ import annotations

from pathlib import Path

import field_nets_3d as nets
import numpy as np
import pytest
import torch

from firmware_export import ExportOptions, export
from tinyprune.errors import UnsupportedOpError
from tinyprune.models import create_model

pytestmark = pytest.mark.tf

_OPTIONS = ExportOptions(calib_cap=36, verify_samples=8)
_OFF = ExportOptions(calib_cap=8, verify_samples=4, rewrite_3d="off")
#: int8 vs float on the input-dependent part of the output (outputs minus their mean over
#: the samples); measured 0.997 (test_physnet), 0.99+ (test_deeprppg) on cortex-m7.
MIN_CENTRED_COSINE = 0.95


def _clips() -> np.ndarray:
    return nets.rppg_clips()[0]


def _assert_fully_int8_and_verified(
    report: dict, rewritten: tuple[str, ...], min_centred: float = MIN_CENTRED_COSINE
) -> None:
    assert report["float_ops"] == []
    assert not {"CONV_3D", "CONV_3D_TRANSPOSE"} & set(report["ops"])
    verify = report["verify"]
    gates = [k for k, v in verify.items() if isinstance(v, dict) and v.get("gate")]
    assert {"onnx_vs_tflite_float", "int8_vs_float"} <= set(gates)
    assert all(verify[k]["passed"] for k in gates), {k: verify[k]["passed"] for k in gates}
    assert verify["onnx_vs_tflite_float"]["max_abs"] < 1e-4
    assert verify["int8_vs_float"]["centred_cos"] >= min_centred
    for name in rewritten:
        assert name in report["rewrites"], report["rewrites"]


@pytest.mark.parametrize(
    ("name", "rewritten"),
    [
        (
            "test_physnet",
            (
                "3d-to-2d:conv3d:conv_block2.0",
                "3d-to-2d:conv_transpose3d:upsample1.0",
                "3d-to-2d:max_pool3d:pool_spatem",
                "3d-to-2d:batchnorm-folded:conv_block2.1",
            ),
        ),
        ("test_deeprppg", ("3d-to-2d:conv3d:block4.0", "3d-to-2d:conv1d-over-time:head.0")),
    ],
)
def test_3d_rppg_net_exports_to_cortex_m7_fully_int8(
    name: str, rewritten: tuple[str, ...], tmp_path: Path
) -> None:
    result = export(
        nets.trained(name), _clips(), target="cortex-m7", out_dir=tmp_path / name, options=_OPTIONS
    )
    report = result.report
    _assert_fully_int8_and_verified(report, rewritten)
    tflm = report["verify"]["tflm_vs_litert_ref"]
    # bit-exact against LiteRT's reference kernels; PhysNet's ELU has no reference kernel, so
    # there TFLM is compared with LiteRT's builtin ones (see checks._tflm_parity)
    assert tflm["max_abs"] <= (0 if name == "test_deeprppg" else 2)
    assert "CONV_2D" in report["ops"] and "STRIDED_SLICE" in report["ops"]


def test_3d_rppg_net_exports_to_rpi4_fully_int8_with_the_rewrite(tmp_path: Path) -> None:
    result = export(
        nets.trained("test_deeprppg"),
        _clips(),
        target="rpi4",
        out_dir=tmp_path / "run",
        options=_OPTIONS,
    )
    _assert_fully_int8_and_verified(result.report, ("3d-to-2d:conv3d:block1.0",))


def test_rewrite_off_keeps_conv3d_on_rpi4(tmp_path: Path) -> None:
    calib = np.random.default_rng(0).random((8, 3, 8, 16, 16), dtype=np.float32)
    result = export(
        create_model("test_physnet"), calib, target="rpi4", out_dir=tmp_path / "run", options=_OFF
    )
    verify = result.report["verify"]
    assert verify["torch_vs_onnxruntime"]["passed"]
    assert verify["onnx_vs_tflite_float"]["passed"], verify["onnx_vs_tflite_float"]
    assert verify["onnx_vs_tflite_float"]["max_abs"] < 1e-5
    assert "CONV_3D" in result.report["ops"] and "CONV_3D_TRANSPOSE" in result.report["ops"]
    assert any(r.startswith("convtranspose3d-bias-add:") for r in result.report["rewrites"])
    assert not any(r.startswith("3d-to-2d:") for r in result.report["rewrites"])


@pytest.mark.parametrize("name", ["test_physnet", "test_deeprppg"])
def test_3d_rppg_net_on_cortex_m4_with_rewrite_off_names_conv3d(name: str, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedOpError) as info:
        export(
            create_model(name),
            _clips()[:2],
            target="cortex-m4",
            out_dir=tmp_path / "run",
            options=_OFF,
        )
    assert info.value.exit_code == 4
    assert "CONV_3D" in info.value.ops and "CONV_3D" in str(info.value)
    assert not (tmp_path / "run").exists()


def _pruned_pt2(tmp_path: Path) -> Path:
    """test_physnet (trained), l1-pruned to 50 % of its MACs, saved as a .pt2 program."""
    import copy

    from tinyprune.criteria import get
    from tinyprune.pruning.select import Budget
    from tinyprune.pruning.structured import prune_structured

    model = copy.deepcopy(nets.trained("test_physnet"))
    example = torch.from_numpy(_clips()[:1])
    result = prune_structured(model, example, get("l1"), Budget(target_flops=0.5), round_to=1)
    assert result is not None
    path = tmp_path / "pruned.pt2"
    torch.export.save(torch.export.export(model.eval(), (example,)), str(path))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("target", ["rpi4", "cortex-m7"])
def test_pruned_3d_net_pt2_exports_like_the_dense_one(target: str, tmp_path: Path) -> None:
    from tinyprune.app.sources import load_exported_program

    module = load_exported_program(_pruned_pt2(tmp_path))
    result = export(module, _clips(), target=target, out_dir=tmp_path / "run", options=_OPTIONS)
    # pruned without fine-tuning: the export's own gates (verification passing) are the bar
    _assert_fully_int8_and_verified(
        result.report, ("3d-to-2d:conv3d:conv_block2.0", "3d-to-2d:max_pool3d:pool_spa"), 0.0
    )


@pytest.mark.slow
def test_pruned_3d_net_pt2_with_rewrite_off_pools_in_2d_on_rpi4(tmp_path: Path) -> None:
    from tinyprune.app.sources import load_exported_program

    module = load_exported_program(_pruned_pt2(tmp_path))
    result = export(module, _clips()[:8], target="rpi4", out_dir=tmp_path / "run", options=_OFF)
    assert "CONV_3D" in result.report["ops"]
    assert {"pool_spa", "pool_spatem", "pool_global"} <= set(result.report["rewrites"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["physnet_style", "ibvp_style"])
@pytest.mark.parametrize("target", ["rpi4", "cortex-m7"])
def test_field_style_3d_nets_export_fully_int8(name: str, target: str, tmp_path: Path) -> None:
    result = export(
        nets.trained(name), _clips(), target=target, out_dir=tmp_path / "run", options=_OPTIONS
    )
    _assert_fully_int8_and_verified(result.report, ())
    kinds = {r.split(":")[1] for r in result.report["rewrites"] if r.startswith("3d-to-2d:")}
    want = {"conv_transpose3d", "upsample3d-nearest", "adaptive_avg_pool3d"}
    if name == "ibvp_style":
        want = {"instance_norm3d", "diff-over-axis", "adaptive_max_pool3d", "avg_pool3d"}
    assert want <= kinds, kinds
