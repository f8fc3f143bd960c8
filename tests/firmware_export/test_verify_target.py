"""Verification fitted to the target: XNNPACK gates LiteRT targets, TFLM gates TFLM targets, a
TFLM-vs-reference-kernel difference passes as ``kernel_difference`` when TFLM stays faithful to
float, and an int8 model that ignores its input fails on the centred cosine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from field_nets import IgnoresInput, deepphys_style, digits, rppg_frames

from firmware_export import ExportOptions, export
from firmware_export import parity as par
from firmware_export import verification as plan
from firmware_export.checks import VerifyInputs
from firmware_export.tflite_model import TensorInfo
from tinyprune.cli import main
from tinyprune.errors import VerificationError

pytestmark = pytest.mark.tf

OPTS = ExportOptions(calib_cap=64, verify_samples=32)


@pytest.fixture(scope="module")
def deepphys_rpi4(tmp_path_factory: pytest.TempPathFactory):
    """The DeepPhys-style net (L1-normalised attention masks: SUM ops) exported to rpi4."""
    x, _ = rppg_frames()
    out = tmp_path_factory.mktemp("dp") / "run"
    return export(deepphys_style(), x[::2][:64], target="rpi4", out_dir=out, options=OPTS)


def test_deepphys_to_rpi4_is_gated_on_xnnpack_not_on_tflm(deepphys_rpi4) -> None:
    verify = deepphys_rpi4.report["verify"]
    gate = verify["int8_vs_float"]
    assert gate["gate"] and gate["runtime"] == "litert_xnnpack" and gate["passed"]
    assert gate["centred_gated"] and gate["centred_cos"] >= 0.95  # the net follows its input
    assert gate["centred_sqnr_db"] is not None and gate["variation_lsb"] > 10
    ref = verify["litert_ref_vs_float"]
    assert not ref["gate"] and ref["runtime"] == "litert_ref"
    parity = verify["tflm_vs_litert_ref"]
    assert not parity["gate"]  # TFLM is not what runs on a Pi: reported, never gating
    # the case: TFLM and REF round the mask's SUM differently
    assert parity["max_abs"] >= 1 and " SUM " in parity["first_divergent_op"] + " "
    assert parity["verdict"] == "kernel_difference" and parity["passed"]
    closer = parity["closer_to_float"]
    assert [row["label"] for row in closer] == ["out0"]
    assert closer[0]["closer"] in ("tflm", "litert_ref", "equal")
    assert verify["tflm_vs_float"]["passed"] and not verify["tflm_vs_float"]["gate"]
    saved = json.loads((deepphys_rpi4.out_dir / "verify.json").read_text())
    assert saved["tflm_vs_litert_ref"]["verdict"] == "kernel_difference"
    assert "kernel_difference" in (deepphys_rpi4.out_dir / "report.md").read_text()


def test_deepphys_to_cortex_m7_passes_as_kernel_difference(tmp_path: Path) -> None:
    x, _ = rppg_frames()
    result = export(
        deepphys_style(), x[::2][:64], target="cortex-m7", out_dir=tmp_path, options=OPTS
    )
    verify = result.report["verify"]
    assert verify["int8_vs_float"]["runtime"] == "tflm" and verify["int8_vs_float"]["passed"]
    assert verify["int8_vs_float"]["centred_cos"] >= 0.95
    parity = verify["tflm_vs_litert_ref"]
    assert parity["gate"] and parity["passed"] and parity["verdict"] == "kernel_difference"
    assert (tmp_path / "model_data.h").is_file()


def test_without_float_samples_a_tflm_target_still_refuses_the_difference(
    deepphys_rpi4, tmp_path: Path, capsys
) -> None:
    tflite = deepphys_rpi4.out_dir / "model_int8.tflite"
    code = main(["report", str(tflite), "--target", "cortex-m7", "--out", str(tmp_path)])
    assert code == 5
    assert "nothing tells which kernels are right" in capsys.readouterr().err


def test_int8_model_that_ignores_its_input_fails_on_the_centred_cosine(tmp_path: Path) -> None:
    x, _ = digits()
    out = tmp_path / "run"
    with pytest.raises(VerificationError) as info:
        export(IgnoresInput(), x[:64], target="rpi4", out_dir=out, options=OPTS)
    msg = str(info.value)
    plain = float(re.search(r"out0: cos=([0-9.]+)", msg).group(1))
    centred = float(re.search(r"centred cos=([0-9.e-]+)", msg).group(1))
    assert plain >= 0.99 and centred < 0.5  # plain cosine alone would have passed it
    assert info.value.exit_code == 5 and not (out / "model_int8.tflite").exists()


def _tensor(scale: float) -> TensorInfo:
    return TensorInfo(0, "out", (1, 4), "INT8", (scale,), (0,), 0, False)


def _parity_case(tflm_fidelity_passed: bool, gates: bool):
    rng = np.random.default_rng(0)
    ref_q = [rng.integers(-100, 100, (8, 4)).astype(np.int8)]
    tflm_q = [(ref_q[0].astype(np.int16) + 12).clip(-128, 127).astype(np.int8)]
    c = par.lsb_comparison("tflm_vs_litert_ref", ref_q, tflm_q, 0)
    runs = plan._Runs(parity=par.ParityRun(c, ref_q, tflm_q, "they disagree by 12 LSB"))
    reference = [ref_q[0].astype(np.float32) * 0.1]
    inp = VerifyInputs(b"", None, None, None, None, True)
    fidelity = {"passed": tflm_fidelity_passed}
    return plan._parity_entry(runs, gates, reference, [_tensor(0.1)], inp, fidelity)


def test_kernel_difference_needs_tflm_to_be_faithful_to_float() -> None:
    entry = _parity_case(True, gates=True)
    assert entry["passed"] and entry["verdict"] == "kernel_difference"
    assert entry["closer_to_float"][0]["closer"] == "litert_ref"  # TFLM is 12 LSB off here
    with pytest.raises(VerificationError, match="12 LSB.*fails the int8-vs-float tolerance"):
        _parity_case(False, gates=True)  # a real disagreement with float: exit 5
    reported = _parity_case(False, gates=False)  # LiteRT target: reported only
    assert not reported["passed"] and reported["verdict"] == "failed" and not reported["gate"]


class _XnnpackRefuses:
    """``run_litert_outputs`` whose XNNPACK delegate refuses the graph, as it did for a fit
    search's smallest physnet_2p1d (``failed to create XNNPACK runtime``)."""

    def __init__(self, real):
        self.real = real

    def __call__(self, model, x, resolver="ref"):
        from tinyprune.errors import ExportError

        if resolver == "xnnpack":
            msg = "op 96: prepare failed: failed to create XNNPACK runtime"
            raise ExportError(msg)
        return self.real(model, x, resolver)


@pytest.mark.parametrize("target", ["cortex-m7", "rpi4"])
def test_xnnpack_refusing_a_model_fails_only_a_litert_target(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Cortex-M never runs XNNPACK: its failure is reported there; on a Pi it is the runtime."""
    from firmware_export import verify as v
    from tinyprune.errors import ExportError
    from tinyprune.models import create_model

    monkeypatch.setattr(v, "run_litert_outputs", _XnnpackRefuses(v.run_litert_outputs))
    x, _ = digits()
    opts = ExportOptions(calib_cap=32, verify_samples=8)
    if target == "rpi4":
        with pytest.raises(ExportError, match="XNNPACK"):
            export(
                create_model("micro_cnn").eval(),
                x[:32],
                target=target,
                out_dir=tmp_path / "r",
                options=opts,
            )
        assert not (tmp_path / "r").exists()
        return
    res = export(
        create_model("micro_cnn").eval(),
        x[:32],
        target=target,
        out_dir=tmp_path / "r",
        options=opts,
    )
    verify = res.report["verify"]
    assert verify["int8_vs_float"]["runtime"] == "tflm" and verify["int8_vs_float"]["passed"]
    skipped = verify["litert_xnnpack_vs_ref"]
    assert skipped["skipped"] and "failed to create XNNPACK runtime" in skipped["reason"]
