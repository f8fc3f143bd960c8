"""The preprocessing contract travels: zoo net -> train -> eval -> export -> infer, one contract.

A tiny TS-CAN is trained with no ``--data-kw`` (its declared contract builds the data), the run
records what the data set really built, and ``eval``, ``export --calib-from RUN`` and ``infer``
each read that same contract back. Options that contradict it exit 2 before any work.
"""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

from tinyprune.app.contract import data_options, resolve_data
from tinyprune.cli import main
from tinyprune.config import DataSpec
from tinyprune.errors import ConfigError
from tinyprune.models import create_model

MODEL = "zoo:test_tscan"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("contract") / "run"
    argv = ["train", MODEL, "--data", "synthetic-rppg", "--epochs", "1", "--out", str(out)]
    assert main(argv) == 0
    return out


def _contract(path: Path) -> dict:
    return json.loads(path.read_text())["preprocessing"]


def test_contract_becomes_the_data_options() -> None:
    c = create_model("test_tscan").preprocessing
    opts = data_options(c, "synthetic-rppg")
    assert opts == {
        "chunk": 4,
        "size": 12,
        "data_types": ("DiffNormalized", "Standardized"),
        "label_type": "DiffNormalized",
        "fs": 30.0,
    }
    assert data_options(c, "pure:/x")["detect"] is True
    assert data_options(c, "digits") == {}
    spec = resolve_data(DataSpec("synthetic-rppg", {"n_train": 2}), c, MODEL)
    assert spec.options["n_train"] == 2 and spec.options["chunk"] == 4


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"chunk": 8}, "--model-kw frames=8"),
        ({"size": 16}, "--model-kw img_size=16"),
        ({"data_types": "Standardized"}, "3 input channels but .* takes 6"),
    ],
)
def test_an_override_that_contradicts_the_net_is_refused(options, match) -> None:
    c = create_model("test_tscan").preprocessing
    with pytest.raises(ConfigError, match=match):
        resolve_data(DataSpec("synthetic-rppg", options), c, MODEL)


def test_train_records_the_models_contract(run: Path) -> None:
    recorded = _contract(run / "summary.json")
    assert recorded == create_model("test_tscan").preprocessing.to_dict()
    config = tomllib.loads((run / "config.toml").read_text())
    assert config["preprocessing"] == recorded
    assert config["data"]["options"] == {}  # the user gave none: the contract built the data
    calib = np.load(run / "calib.npy")
    assert calib.shape[1:] == (6, 4 * 12, 12)


def test_eval_reuses_the_runs_contract(run: Path, capsys) -> None:
    assert main(["eval", str(run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert -1.0 <= metrics["pearson"] <= 1.0


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--data-kw", "chunk=8"], "contradicts"),
        (["--data-kw", "label_type=Standardized"], "label_type: 'DiffNormalized' vs"),
    ],
)
def test_eval_with_a_mismatched_override_exits_2(run: Path, argv, match, capsys) -> None:
    assert main(["eval", str(run), *argv]) == 2
    assert re.search(match, capsys.readouterr().err)


def test_train_with_a_contradicting_option_exits_2_and_writes_nothing(tmp_path, capsys) -> None:
    out = tmp_path / "bad"
    argv = ["train", MODEL, "--data", "synthetic-rppg", "--data-kw", "chunk=8", "--out", str(out)]
    assert main([*argv, "--epochs", "1"]) == 2
    assert "--model-kw frames=8" in capsys.readouterr().err
    assert not out.exists()


def test_export_calib_from_another_nets_run_exits_2(run: Path, tmp_path, capsys) -> None:
    argv = ["export", "zoo:test_physnet_2p1d", "--calib-from", str(run), "--target", "rpi4"]
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    assert "different preprocessing contracts" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def _video(path: Path) -> Path:
    cv2 = pytest.importorskip("cv2")
    from tinyprune.data.synthetic import SyntheticConfig, generate

    v = generate(SyntheticConfig(seed=3, duration_s=6.0, frame_size=(90, 120), face_px=40))
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), v.fs, (120, 90))
    for f in v.frames:
        out.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    out.release()
    return path


@pytest.fixture(scope="module")
def exported(run: Path) -> Path:
    pytest.importorskip("onnx2tf")
    argv = ["export", str(run), "--calib-from", str(run), "--target", "rpi4"]
    assert main([*argv, "--out", str(run / "export"), "--min-cosine", "0.5"]) == 0
    return run / "export"


@pytest.mark.tf
def test_export_and_infer_read_the_same_contract(run: Path, exported: Path, tmp_path, capsys):
    want = _contract(run / "summary.json")
    assert _contract(exported / "report.json") == want
    header = (exported / "model_data.h").read_text()
    assert "constexpr int kModelPreprocFrames = 4;" in header
    assert "constexpr int kModelPreprocHeight = 12;" in header
    capsys.readouterr()
    video = str(_video(tmp_path / "v.avi"))
    assert main(["infer", str(run), "--video", video, "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["preprocessing"] == want and result["frames"] == 180
    assert np.isfinite(result["hr"])


@pytest.mark.tf
def test_infer_refuses_an_export_whose_run_disagrees(run: Path, exported: Path, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    summary = json.loads((copy / "summary.json").read_text())
    summary["preprocessing"]["label_type"] = "Standardized"
    (copy / "summary.json").write_text(json.dumps(summary))
    assert main(["infer", str(copy), "--video", str(_video(tmp_path / "v.avi"))]) == 2
    assert "record different preprocessing contracts" in capsys.readouterr().err


def test_prune_records_the_contract_too(tmp_path) -> None:
    out = tmp_path / "pruned"
    argv = ["prune", MODEL, "--data", "synthetic-rppg", "--criterion", "l1", "--out", str(out)]
    budget = ["--target-flops", "0.9", "--round-to", "1", "--epochs", "1", "--finetune-epochs", "1"]
    assert main([*argv, *budget]) == 0
    want = create_model("test_tscan").preprocessing.to_dict()
    assert _contract(out / "summary.json") == want
    assert tomllib.loads((out / "config.toml").read_text())["preprocessing"] == want
