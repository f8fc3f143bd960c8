"""End-to-end: `tinyprune prune` on handwritten digits, then `tinyprune export` of the result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_runs import prune_argv

from tinyprune.cli import main


@pytest.fixture(scope="module")
def l1_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("l1") / "run"
    flags = ["--target-flops", "0.5", "--epochs", "3", "--finetune-epochs", "2", "--lr", "3e-3"]
    assert main(prune_argv("l1", out, *flags)) == 0
    return out


def test_structured_prune_meets_the_budget_and_keeps_accuracy(l1_run: Path) -> None:
    summary = json.loads((l1_run / "summary.json").read_text())
    prune = summary["prune"]
    assert prune["macs_after"] <= 0.5 * prune["macs_before"]
    assert prune["params_after"] < prune["params_before"]
    assert summary["metric_finetuned"]["accuracy"] > 0.85
    assert (l1_run / "pruned.pt2").is_file() and (l1_run / "calib.npy").is_file()


@pytest.mark.tf
def test_pruned_model_exports_through_tflm(l1_run: Path, tmp_path: Path) -> None:
    assert (
        main(
            [
                "export",
                str(l1_run / "pruned.pt2"),
                "--calib",
                str(l1_run / "calib.npy"),
                "--target",
                "cortex-m4",
                "--out",
                str(tmp_path / "export"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "export" / "report.json").read_text())
    summary = json.loads((l1_run / "summary.json").read_text())
    assert report["macs"] == summary["prune"]["macs_after"]
    assert report["verify"]["tflm_vs_litert_ref"]["max_abs"] == 0


@pytest.mark.tf
def test_unstructured_zeros_survive_int8_export(tmp_path: Path) -> None:
    from firmware_export.tflite_model import parse_tflite

    run = tmp_path / "wgj"
    flags = ["--sparsity", "0.8", "--epochs", "3", "--lr", "3e-3"]
    assert main(prune_argv("wgj", run, *flags)) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metric_pruned"]["accuracy"] > 0.8
    assert (
        main(
            [
                "export",
                str(run / "pruned.pt2"),
                "--calib",
                str(run / "calib.npy"),
                "--target",
                "cortex-m4",
                "--out",
                str(tmp_path / "export"),
            ]
        )
        == 0
    )
    model = parse_tflite((tmp_path / "export" / "model_int8.tflite").read_bytes())
    weights = [
        model.constant(op.inputs[1])
        for op in model.ops
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
    ]
    int8_zeros = sum(int(np.sum(w == 0)) for w in weights)
    torch_zeros = sum(
        lay["weight_params"] - lay["weight_nonzero"] for lay in summary["sparsity"]["layers"]
    )
    assert torch_zeros > 0.5 * summary["sparsity"]["dense_params"]
    # every pruned weight stays exactly zero through BN folding and int8 quantization
    assert int8_zeros >= torch_zeros


def test_bad_budget_for_the_criterion_is_a_usage_error(tmp_path: Path, capsys) -> None:
    assert main(prune_argv("wgj", tmp_path / "r", "--target-flops", "0.5")) == 2
    assert "--sparsity" in capsys.readouterr().err


def test_unknown_criterion_suggests_the_closest(tmp_path: Path, capsys) -> None:
    assert main(prune_argv("l1x", tmp_path / "r", "--target-flops", "0.5")) == 2
    assert "(did you mean 'l1'?)" in capsys.readouterr().err


def test_train_frame_stacked_rppg_net_on_clip_data(tmp_path: Path) -> None:
    """Clip data (C, T, H, W) trains a frame-stacked 2-D rPPG net; export calibration is stacked."""
    out = tmp_path / "rppg"
    assert (
        main(
            [
                "train",
                "zoo:test_physnet_2p1d",
                "--data",
                "synthetic-rppg",
                "--data-kw",
                "size=16",
                "--data-kw",
                "chunk=8",
                "--epochs",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    calib = np.load(out / "calib.npy")
    assert calib.shape[1:] == (3, 8 * 16, 16)
    summary = json.loads((out / "summary.json").read_text())
    assert "val_pearson" in summary["fit"]["history"][-1]


def test_malformed_model_option_is_a_usage_error(tmp_path: Path, capsys) -> None:
    assert (
        main(
            [
                "train",
                "zoo:micro_cnn",
                "--data",
                "digits",
                "--model-kw",
                "width",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "KEY=VALUE" in capsys.readouterr().err


def test_cluster_de_options_reach_the_search(tmp_path: Path) -> None:
    out = tmp_path / "run"
    flags = ["--target-flops", "0.5", "--epochs", "1", "--finetune-epochs", "0"]
    flags += ["--criterion-kw", "source=layer_direction", "--de-pop", "4", "--de-gens", "1"]
    flags += ["--de-calib", "32", "--de-heldout", "48"]
    assert main(prune_argv("cluster_de", out, *flags)) == 0
    summary = json.loads((out / "summary.json").read_text())
    search = summary["search"]
    assert (search["pop"], search["gens"]) == (4, 1)
    assert (search["calib_images"], search["heldout_images"]) == (32, 48)
    assert summary["criterion_options"]["source"] == "layer_direction"
    assert len(summary["criterion_options"]["k_per_layer"]) > 0


def test_unknown_criterion_option_lists_the_known_ones(tmp_path: Path, capsys) -> None:
    flags = ["--target-flops", "0.5", "--criterion-kw", "q=2"]
    assert main(prune_argv("l1", tmp_path / "r", *flags)) == 2
    err = capsys.readouterr().err
    assert "'q'" in err and "p" in err.split("its options:")[1]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--de-pop", "2"),
        ("--de-workers", "0"),
        ("--bn-recalib", "-1"),
        ("--finetune-lr", "0"),
    ],
)
def test_bad_job_setting_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    assert main(prune_argv("cluster_de", tmp_path / "r", "--target-flops", "0.5", flag, value)) == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_clip_size_mismatch_names_the_data_options_that_fit() -> None:
    """A frame-stacked net that declares no preprocessing contract (a user's own TS-CAN) fed
    synthetic-rppg's default clips (64 frames, 3 channels): the error names the --data-kw that
    build its clips, and with them the data fit. (Zoo nets declare a contract: no options.)"""
    from tinyprune.app.runs import check_compatible
    from tinyprune.data import build_dataset
    from tinyprune.errors import ConfigError
    from tinyprune.models import create_model

    net = create_model("test_tscan")
    net.preprocessing = None  # as a model file without a declared contract
    small = {"n_train": 1, "n_val": 1, "n_test": 1}
    with pytest.raises(ConfigError) as err:
        check_compatible(net, build_dataset("synthetic-rppg", **small), "net.py", "synthetic-rppg")
    hint = "--data-kw chunk=4 --data-kw size=12 --data-kw data_types=DiffNormalized,Standardized"
    assert hint in str(err.value)
    options = {"chunk": 4, "size": 12, "data_types": ("DiffNormalized", "Standardized")}
    bundle = build_dataset("synthetic-rppg", **small, **options)
    check_compatible(net, bundle, "net.py", "synthetic-rppg")
