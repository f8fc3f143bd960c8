"""Every tiny zoo variant marked TFLM-native exports to a Cortex-M profile, bit-exact on TFLM.

The spec flag ``tflm_native`` promises that a model converts to int8 TFLite with TFLM builtin
ops only and rank <= 4 tensors. These tests hold the zoo to it by running the real export
(torch -> ONNX -> onnx2tf -> int8 -> TFLM) on each ``test_*`` variant with the flag.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinyprune.models import create_model, get_model_spec, list_models

TFLM_NATIVE_TINY = [n for n in list_models("test_*") if get_model_spec(n).tflm_native]

# Untrained tiny nets on seeded normal inputs: int8 rounding keeps the output direction
# (cosine) near 1; a broken shift/concat scale or a mis-transposed layer drops it far below.
MIN_INT8_COSINE = 0.98


def test_every_tflm_native_family_has_a_tiny_variant():
    """The parametrized export below must cover the rPPG nets whose shifts broke int8 before."""
    assert {"test_tscan", "test_efficientphys", "test_deepphys", "test_physnet_2p1d"} <= set(
        TFLM_NATIVE_TINY
    )


@pytest.mark.tf
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", TFLM_NATIVE_TINY)
def test_tflm_native_variant_exports_to_cortex_m7(name, tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("tflite_micro")
    from firmware_export import ExportOptions, export

    torch.manual_seed(0)
    model = create_model(name).eval()
    calib = np.random.default_rng(0).standard_normal((16, *model.input_shape)).astype(np.float32)
    result = export(
        model,
        calib,
        target="cortex-m7",
        out_dir=tmp_path,
        options=ExportOptions(calib_cap=16, verify_samples=8),
    )
    verify = result.report["verify"]
    parity = verify["tflm_vs_litert_ref"]
    assert parity["max_abs"] == 0 or (parity["max_abs"] <= 1 and parity["known_difference"])
    assert verify["int8_vs_float"]["cos"] > MIN_INT8_COSINE
    assert result.report["flash_bytes"] >= (tmp_path / "model_int8.tflite").stat().st_size
    assert (tmp_path / "model_data.h").exists()
    ops = set(result.report["ops"])
    assert not ops & {"CONV_3D", "MAX_POOL_3D", "AVERAGE_POOL_3D"}


def test_eval_command_prints_the_run_metric(tmp_path, capsys):
    """``tinyprune eval RUN`` reads model.pt2 and the data of summary.json; bad split -> exit 2."""
    from tinyprune.app.sources import load_model
    from tinyprune.app.train import train_run
    from tinyprune.cli import main
    from tinyprune.config import TrainRunConfig
    from tinyprune.data import build_dataset
    from tinyprune.metrics import top1_accuracy

    cfg = TrainRunConfig(epochs=1, progress=False)
    files = train_run("zoo:test_ds_cnn", "digits", cfg, tmp_path / "run")
    assert main(["eval", str(tmp_path / "run"), "--json"]) == 0
    got = __import__("json").loads(capsys.readouterr().out)["accuracy"]
    test = build_dataset("digits").test
    module = load_model(str(files.program)).module
    with torch.no_grad():
        logits = torch.cat([module(torch.from_numpy(test.x[i : i + 1])) for i in range(len(test))])
    assert got == pytest.approx(top1_accuracy(logits, test.y))
    assert main(["eval", str(tmp_path / "run"), "--split", "tset"]) == 2
    assert "did you mean 'test'" in capsys.readouterr().err
