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


class _Miss:
    """An export result over budget: RAM at ``use`` of its limit."""

    def __init__(self, use: float) -> None:
        self.report = {"budget": {"ram": {"used": int(1000 * use), "limit": 1000, "ok": False}}}


@pytest.mark.tf
def test_a_final_export_over_budget_prunes_again_smaller(tmp_path: Path, monkeypatch) -> None:
    """The search's trials prune before fine-tuning; when the fine-tuned network's export
    misses the budget, the job starts again from the unpruned network at a fraction shrunk by
    the square of the overshoot, and records the retry."""
    from tinyprune.app import fit
    from tinyprune.errors import BudgetExceededError

    real, seen = fit._final_check, []

    def first_misses(model, *args, **kwargs):
        seen.append(sum(p.numel() for p in model.parameters()))
        if len(seen) == 1:
            msg = "over"
            raise BudgetExceededError(msg, result=_Miss(1.2))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(fit, "_final_check", first_misses)
    out = tmp_path / "run"
    board = str(write_board(tmp_path, 9000))
    args = prune_argv("l1", out, "--epochs", "1", "--finetune-epochs", "1", "--lr", "3e-3")
    assert main([*args, "--target", board]) == 0
    target = json.loads((out / "summary.json").read_text())["target"]
    (retry,) = target["retries"]
    chosen = max(t["fraction"] for t in target["tried"] if t["fits"])
    assert retry == {"fraction": chosen, "budget_use": 1.2}
    assert target["fraction"] == pytest.approx(chosen * (0.97 / 1.2) ** 2)
    assert target["fits"] and target["flash_bytes"] <= 9000
    assert seen[1] < seen[0]  # pruned again from the dense network, to fewer weights
    report = json.loads((out / "export" / "report.json").read_text())
    assert report["budget_ok"] and report["flash_bytes"] == target["flash_bytes"]


@pytest.mark.tf
def test_a_final_export_that_keeps_missing_exits_3(tmp_path: Path, monkeypatch, capsys) -> None:
    from tinyprune.app import fit
    from tinyprune.errors import BudgetExceededError

    calls = []

    def always_misses(model, *args, **kwargs):
        calls.append(1)
        msg = "the pruned and fine-tuned model does not fit"
        raise BudgetExceededError(msg, result=_Miss(1.05))

    monkeypatch.setattr(fit, "_final_check", always_misses)
    args = prune_argv("l1", tmp_path / "run", "--epochs", "1", "--finetune-epochs", "1")
    assert main([*args, "--target", str(write_board(tmp_path, 9000))]) == 3
    assert len(calls) == 1 + fit.FINAL_RETRIES
    assert "does not fit" in capsys.readouterr().err
