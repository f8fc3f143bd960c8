"""End-to-end: `tinyprune export` / `tinyprune report` on tiny models, through TFLM.

The CLI runs in-process (``main(argv)``) so TensorFlow is imported once per test session.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
from cli_runs import export_argv

from firmware_export.c_array import c_array_bytes
from firmware_export.tflm import tflm_runs_in
from tinyprune.cli import main

pytestmark = pytest.mark.tf

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny_cnn.py"
REQUIRED_KEYS = {"flash_bytes", "arena_bytes", "macs", "params", "ops", "budget", "verify"}


def _calib(path: Path, shape: tuple[int, ...], n: int = 24, seed: int = 0) -> Path:
    np.save(path, np.random.default_rng(seed).random((n, *shape), dtype=np.float32))
    return path


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export of the example CNN to cortex-m4, shared by the checks below."""
    d = tmp_path_factory.mktemp("cnn")
    calib = _calib(d / "calib.npy", (1, 16, 16))
    code = main(export_argv(f"{EXAMPLE}:build", calib, "cortex-m4", d / "run"))
    assert code == 0
    return d / "run"


def test_export_writes_the_contract_files(cnn_run: Path) -> None:
    for name in (
        "model_int8.tflite",
        "model_data.h",
        "model_data.cc",
        "report.json",
        "report.md",
        "report.html",
        "verify.json",
        "model.onnx",
    ):
        assert (cnn_run / name).is_file(), name
    assert not list(cnn_run.glob(".staging-*"))
    report = json.loads((cnn_run / "report.json").read_text())
    assert set(report) >= REQUIRED_KEYS
    assert report["flash_bytes"] == (cnn_run / "model_int8.tflite").stat().st_size
    assert set(report["budget"]) >= {"flash", "ram"}
    assert all({"used", "limit", "ok"} <= set(row) for row in report["budget"].values())
    assert report["verify"]["tflm_vs_litert_ref"]["max_abs"] == 0
    assert report["verify"]["int8_vs_float"]["cos"] > 0.99


def test_int8_io_is_channels_last(cnn_run: Path) -> None:
    report = json.loads((cnn_run / "report.json").read_text())
    assert report["inputs"][0]["shape"] == [1, 16, 16, 1]
    assert report["inputs"][0]["dtype"] == "INT8" and report["outputs"][0]["dtype"] == "INT8"


def test_c_array_round_trips_and_compiles(cnn_run: Path, tmp_path: Path) -> None:
    source = (cnn_run / "model_data.cc").read_text()
    assert c_array_bytes(source) == (cnn_run / "model_int8.tflite").read_bytes()
    if shutil.which("g++") is None:
        pytest.skip("g++ not installed")
    subprocess.run(
        [
            "g++",
            "-std=c++17",
            "-Wall",
            "-Werror",
            "-c",
            str(cnn_run / "model_data.cc"),
            "-I",
            str(cnn_run),
            "-o",
            str(tmp_path / "m.o"),
        ],
        check=True,
    )


def test_header_arena_is_the_computed_device_arena_and_tflm_runs_in_the_host_one(
    cnn_run: Path,
) -> None:
    report = json.loads((cnn_run / "report.json").read_text())
    arena = report["arena"]
    model = (cnn_run / "model_int8.tflite").read_bytes()
    plan = arena["plan"]
    assert arena["header_bytes"] == plan["device_bytes"] + report["arena_margin_bytes"]
    assert plan["device_bytes"] == plan["device_head_bytes"] + plan["tail_32bit_bytes"]
    assert report["arena_margin_bytes"] == 0  # --arena-margin is an explicit extra, default 0
    header = (cnn_run / "model_data.h").read_text()
    assert f"ArenaSize = {arena['header_bytes']};" in header
    assert f"ArenaHostSize = {report['arena_bytes']};" in header
    assert tflm_runs_in(model, report["arena_bytes"])
    assert not tflm_runs_in(model, report["arena_bytes"] - 256)
    assert arena["lower_bound_bytes"] <= report["arena_bytes"]


def test_two_exports_are_byte_identical(cnn_run: Path, tmp_path: Path) -> None:
    calib = _calib(tmp_path / "calib.npy", (1, 16, 16))
    assert main(export_argv(f"{EXAMPLE}:build", calib, "cortex-m4", tmp_path / "again")) == 0
    for name in ("model_int8.tflite", "model_data.h", "model_data.cc", "report.json"):
        assert (tmp_path / "again" / name).read_bytes() == (cnn_run / name).read_bytes(), name


def test_report_rechecks_a_bare_tflite(cnn_run: Path, tmp_path: Path) -> None:
    tflite = tmp_path / "elsewhere.tflite"
    shutil.copy(cnn_run / "model_int8.tflite", tflite)
    assert main(["report", str(tflite), "--target", "cortex-m7"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["target"]["name"] == "cortex-m7"
    assert report["verify"]["tflm_vs_litert_ref"]["max_abs"] == 0
    assert set(report) >= REQUIRED_KEYS


def test_over_budget_exits_3_and_still_writes(cnn_run: Path, tmp_path: Path, capsys) -> None:
    profile = tmp_path / "tiny.toml"
    profile.write_text(
        textwrap.dedent("""
        name = "tiny-mcu"
        runtime = "tflm"
        flash_bytes = 4096
        ram_bytes = 2048
        clock_mhz = 48
    """)
    )
    assert (
        main(["report", str(cnn_run), "--target", str(profile), "--out", str(tmp_path / "r")]) == 3
    )
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["budget"]["flash"]["ok"] is False and report["budget"]["ram"]["ok"] is False
    assert "flash" in capsys.readouterr().err


def test_verification_failure_exits_5_and_emits_nothing(tmp_path: Path) -> None:
    calib = _calib(tmp_path / "calib.npy", (1, 16, 16))
    out = tmp_path / "run"
    code = main(export_argv(f"{EXAMPLE}:build", calib, "cortex-m4", out, "--min-cosine", "1.0"))
    assert code == 5
    assert not (out / "model_data.h").exists() and not (out / "model_int8.tflite").exists()


def test_conv3d_to_cortex_m4_exits_4_naming_the_layer(tmp_path: Path, capsys) -> None:
    calib = _calib(tmp_path / "calib.npy", (3, 4, 8, 8))
    out = tmp_path / "run"
    arch = Path(__file__).with_name("arch_styles.py")
    code = main(
        [*export_argv(f"{arch}:build_conv3d", calib, "cortex-m4", out), "--rewrite-3d", "off"]
    )
    assert code == 4
    err = capsys.readouterr().err
    assert "CONV_3D" in err and "'f.0'" in err and "rpi4" in err
    assert not out.exists() or not any(out.iterdir())


def test_conv3d_to_rpi4_with_rewrite_3d_off_succeeds_with_pooling_rewritten(
    tmp_path: Path,
) -> None:
    calib = _calib(tmp_path / "calib.npy", (3, 4, 8, 8))
    out = tmp_path / "run"
    arch = Path(__file__).with_name("arch_styles.py")
    assert (
        main([*export_argv(f"{arch}:build_conv3d", calib, "rpi4", out), "--rewrite-3d", "off"]) == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["ops"].get("CONV_3D", 0) == 2
    assert report["tflm_runnable"] is False and not (out / "model_data.h").exists()
    assert report["verify"]["onnx_vs_tflite_float"]["passed"]
    assert any(r.startswith("f.") for r in report["rewrites"])


def test_conv3d_to_cortex_m4_exports_through_the_3d_rewrite(tmp_path: Path) -> None:
    """The default ``--rewrite-3d auto``: Conv3d, 3-D pooling and a flatten of the clip as 2-D
    ops; fully int8, TFLM bit-exact, each rewritten layer named by its module path."""
    calib = _calib(tmp_path / "calib.npy", (3, 4, 8, 8))
    out = tmp_path / "run"
    arch = Path(__file__).with_name("arch_styles.py")
    args = ["export", f"{arch}:build_conv3d", "--calib", str(calib), "--target", "cortex-m4"]
    assert main([*args, "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "CONV_3D" not in report["ops"] and report["float_ops"] == []
    assert report["verify"]["tflm_vs_litert_ref"]["max_abs"] == 0
    assert {
        "3d-to-2d:conv3d:f.0",
        "3d-to-2d:batchnorm-folded:f.1",
        "3d-to-2d:avg_pool3d:f.6",
    } <= set(report["rewrites"])
    assert (out / "model_data.h").exists()
