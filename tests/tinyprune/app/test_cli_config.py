"""CLI behaviour of the app layer: --config, early refusals (before any training), user code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_runs import prune_argv

from tinyprune.cli import _parse, build_parser, main, prune_config


def test_config_file_sets_defaults_and_flags_override(tmp_path: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        "[prune]\nepochs = 7\ntarget_flops = 0.25\nround_to = 1\n"
        "[prune.finetune]\nepochs = 3\n[prune.de]\npop = 6\n"
        '[prune.criterion_options]\nsource = "mixed"\n'
        '[data]\nname = "digits"\n[data.options]\nsize = 8\n'
    )
    argv = ["prune", "zoo:micro_cnn", "--criterion", "cluster_de", "--out", str(tmp_path / "o")]
    args = _parse(build_parser(), [*argv, "--config", str(cfg), "--epochs", "2"])
    pc = prune_config(args)
    assert (pc.epochs, pc.target_flops, pc.round_to) == (2, 0.25, 1)  # the flag wins
    assert (pc.finetune.epochs, pc.de.pop) == (3, 6)
    assert pc.criterion_options == {"source": "mixed"}
    assert args.data == "digits" and args.data_kw == ["size=8"]


def test_config_file_with_an_unknown_key_exits_2(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text("[prune]\nepoch = 7\n")
    code = main(prune_argv("l1", tmp_path / "o", "--config", str(cfg)))
    assert code == 2 and "no option epoch" in capsys.readouterr().err


@pytest.mark.parametrize("flops", ["1.5", "0", "-1"])
def test_a_mistyped_flops_target_exits_2_naming_it(flops: str, tmp_path: Path, capsys) -> None:
    code = main(prune_argv("l1", tmp_path / "o", "--target-flops", flops))
    assert code == 2 and "--target-flops" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["train", "prune"])
def test_an_out_that_is_a_file_exits_2_before_training(
    command: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "taken"
    out.write_text("not a folder")
    argv = [command, "zoo:micro_cnn", "--data", "digits", "--out", str(out), "--epochs", "50"]
    if command == "prune":
        argv += ["--criterion", "l1", "--target-flops", "0.5"]
    assert main(argv) == 2
    assert "is an existing file" in capsys.readouterr().err
    assert out.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_out_exits_2_before_training(tmp_path: Path, capsys) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    argv = ["train", "zoo:micro_cnn", "--data", "digits", "--out", str(ro / "run")]
    assert main(argv) == 2 and "not a writable folder" in capsys.readouterr().err


@pytest.mark.parametrize("code", ["import sys\nsys.exit(3)\n", "raise KeyboardInterrupt\n"])
def test_a_model_file_that_exits_at_import_is_bad_input(code: str, tmp_path: Path, capsys) -> None:
    f = tmp_path / "evil.py"
    f.write_text(code + "def build():\n    pass\n")
    calib = tmp_path / "c.npy"
    import numpy as np

    np.save(calib, np.zeros((2, 1, 8, 8), np.float32))
    rc = main(["export", f"{f}:build", "--calib", str(calib), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "evil.py" in err
    assert not (tmp_path / "o").exists()


def test_eval_data_options_need_data_or_a_run(tmp_path: Path, capsys) -> None:
    """``--data-kw`` alone adds to a run folder's own data options; a MODEL has none."""
    assert main(["eval", "zoo:micro_cnn", "--data-kw", "size=8"]) == 2
    assert "pass --data" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--data-kw", "size=8"]) == 2
    assert "holds neither pruned.pt2 nor model.pt2" in capsys.readouterr().err


def test_an_unknown_data_option_lists_the_known_ones(tmp_path: Path, capsys) -> None:
    argv = ["train", "zoo:micro_cnn", "--data", "digits", "--data-kw", "sise=16"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no option 'sise'" in err and "did you mean 'size'" in err


def test_nan_labels_are_refused_before_training() -> None:
    import numpy as np

    from tinyprune.app.runs import check_finite_data
    from tinyprune.errors import ConfigError

    class Split:
        def __init__(self, y: np.ndarray) -> None:
            self.x, self.y = np.zeros((3, 2), np.float32), y

    class Bundle:
        train = Split(np.array([0.1, np.nan, 0.3], np.float32))
        val = test = None

    with pytest.raises(ConfigError, match="1 labels of the train split are NaN"):
        check_finite_data(Bundle(), "pure:/data")
    Bundle.train = Split(np.array([0.1, 0.2, 0.3], np.float32))
    check_finite_data(Bundle(), "pure:/data")
