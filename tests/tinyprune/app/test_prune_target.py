"""`tinyprune prune --target PROFILE`: the largest pruned network whose int8 export fits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runs import prune_argv, write_board, write_slow_board

from tinyprune.cli import main


@pytest.mark.tf
def test_target_keeps_the_largest_network_that_fits(tmp_path: Path) -> None:
    out = tmp_path / "run"
    board = str(write_board(tmp_path, 9000))
    args = prune_argv("l1", out, "--epochs", "1", "--finetune-epochs", "1", "--lr", "3e-3")
    assert main([*args, "--target", board]) == 0
    target = json.loads((out / "summary.json").read_text())["target"]
    tried = target["tried"]
    assert not tried[0]["fits"] and tried[0]["fraction"] == 1.0  # dense is too big
    assert target["fits"] and target["flash_bytes"] <= 9000
    assert 0.125 < target["fraction"] < 1.0
    # maximal: every fraction tried above the chosen one did not fit
    assert all(not t["fits"] for t in tried if t["fraction"] > target["fraction"])
    assert any(t["fits"] and t["fraction"] == target["fraction"] for t in tried)


@pytest.mark.tf
@pytest.mark.parametrize("criterion", ["l1", "tailored"])
def test_a_board_the_dense_network_fits_keeps_it_trained(tmp_path: Path, criterion: str) -> None:
    """Nothing to prune: the answer is the trained dense network, with its metric, exported.

    ``tailored`` prunes while training, so it is not trained before the search; the dense
    answer must still be trained (and its kept export made after training)."""
    out = tmp_path / "run"
    board = str(write_board(tmp_path, 1_000_000))
    args = prune_argv(criterion, out, "--epochs", "2", "--finetune-epochs", "1", "--lr", "3e-3")
    assert main([*args, "--target", board]) == 0
    summary = json.loads((out / "summary.json").read_text())
    target = summary["target"]
    assert target["fraction"] == 1.0 and target["fits"]
    assert summary["metric_trained"]["accuracy"] > 0.5, summary["metric_trained"]  # 10 classes
    report = json.loads((out / "export" / "report.json").read_text())
    assert report["flash_bytes"] == target["flash_bytes"] and report["budget_ok"]


@pytest.mark.tf
def test_unreachable_profile_names_the_smallest_network(tmp_path: Path, capsys) -> None:
    board = str(write_board(tmp_path, 3000))
    args = prune_argv("l1", tmp_path / "run", "--epochs", "1", "--finetune-epochs", "1")
    assert main([*args, "--target", board]) == 3
    err = capsys.readouterr().err
    assert "smallest reachable" in err and "flash" in err and "3000" in err


def test_target_excludes_a_flops_budget(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        main(prune_argv("l1", tmp_path / "r", "--target", "cortex-m4", "--target-flops", "0.5"))
    assert e.value.code == 2


def test_target_with_an_unstructured_criterion_is_a_usage_error(tmp_path: Path, capsys) -> None:
    assert main(prune_argv("wgj", tmp_path / "r", "--target", "cortex-m4")) == 2
    assert "structured criterion" in capsys.readouterr().err


@pytest.mark.tf
def test_latency_limit_caps_the_fraction_before_bisection(tmp_path: Path) -> None:
    """The latency estimate is linear in MACs: the cap is the answer, found with 2 exports."""
    board = write_slow_board(tmp_path)
    out = tmp_path / "run"
    args = ["prune", "zoo:micro_cnn", "--data", "digits", "--criterion", "l1", "--epochs", "1"]
    args += ["--finetune-epochs", "1", "--lr", "3e-3", "--target", str(board), "--out", str(out)]
    assert main(args) == 0
    target = json.loads((out / "summary.json").read_text())["target"]
    dense, capped = target["tried"]  # exactly two trial exports: dense, then the cap
    assert not dense["fits"] and dense["latency_ms"] > 1.5
    assert capped["fits"] and capped["fraction"] == pytest.approx(1.5 / dense["latency_ms"])
    assert target["fraction"] == capped["fraction"] and target["latency_ms"] <= 1.5
    assert target["latency_ms"] > 0.9 * 1.5  # the cap is tight, not a timid under-shoot
    # the final check's verified export is kept in RUN/export, the same figures as the summary
    report = json.loads((out / "export" / "report.json").read_text())
    assert report["flash_bytes"] == target["flash_bytes"] and report["budget_ok"]
    assert (out / "export" / "model_data.h").is_file()
