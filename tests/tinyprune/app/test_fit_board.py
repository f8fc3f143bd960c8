"""`tinyprune fit`: the best fitting candidate across criteria, and every "fits" really fits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runs import write_board

from tinyprune.app.board import choose
from tinyprune.cli import main


def _rows() -> list[dict]:
    return [
        {"criterion": "a", "fits": True, "metric": {"accuracy": 0.90}, "run": "ra"},
        {"criterion": "b", "fits": True, "metric": {"accuracy": 0.95}, "run": "rb"},
        {"criterion": "c", "fits": False, "why": "over flash"},
        {"criterion": "d", "fits": True, "metric": {"accuracy": 0.97}, "run": "rd"},
    ]


def test_choose_takes_the_best_fitting_candidate_and_says_why_others_lost() -> None:
    rows = _rows()
    rows[3]["fits"] = False  # the best metric does not fit: it cannot win
    got = choose(rows, {"accuracy": 0.99}, None)
    assert got["winner"] == "b" and got["winner_run"] == "rb"
    lost = {r["criterion"]: r.get("lost", "") for r in got["candidates"]}
    assert "0.9 vs 0.95 (b)" in lost["a"] and lost["c"] == "over flash" and lost["b"] == ""


def test_choose_reads_hr_mae_lower_is_better_and_applies_the_metric_drop() -> None:
    rows = [
        {"criterion": "a", "fits": True, "metric": {"hr_mae": 4.0, "pearson": 0.5}, "run": "ra"},
        {"criterion": "b", "fits": True, "metric": {"hr_mae": 2.0, "pearson": 0.4}, "run": "rb"},
    ]
    got = choose(rows, {"hr_mae": 1.5}, None)
    assert (got["metric"], got["higher_is_better"], got["winner"]) == ("hr_mae", False, "b")
    none = choose([dict(r) for r in rows], {"hr_mae": 1.5}, metric_drop=0.25)
    assert none["winner"] is None
    assert all("below dense" in r["lost"] for r in none["candidates"])


@pytest.mark.tf
def test_fit_picks_the_best_candidate_and_every_fitting_one_fits(tmp_path: Path) -> None:
    board = write_board(tmp_path, 9000)  # between the dense and the smallest micro_cnn
    out = tmp_path / "fit"
    args = [
        "fit",
        "zoo:micro_cnn",
        "--data",
        "digits",
        "--target",
        str(board),
        "--criteria",
        "l1,random",
        "--epochs",
        "1",
        "--finetune-epochs",
        "1",
        "--lr",
        "3e-3",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    fit = json.loads((out / "fit.json").read_text())
    fitting = [r for r in fit["candidates"] if r["fits"]]
    assert fitting and all(r["flash_bytes"] <= 9000 for r in fitting)
    for r in fitting:  # the candidate's own final export passed the budget gate
        summary = json.loads((Path(r["run"]) / "summary.json").read_text())
        assert summary["target"]["fits"] and summary["target"]["flash_bytes"] == r["flash_bytes"]
    best = max(fitting, key=lambda r: r["metric"]["accuracy"])
    assert fit["winner"] == best["criterion"]
    report = json.loads((out / "export" / "report.json").read_text())
    assert report["budget"]["flash"]["ok"] and report["flash_bytes"] <= 9000
    assert (out / "export" / "model_data.h").is_file()
    assert "chosen" in (out / "fit.md").read_text() and "<svg" in (out / "fit.html").read_text()
    # resumable: a second run redoes no candidate (their run folders are left as they were)
    stamps = {r["criterion"]: (Path(r["run"]) / "pruned.pt2").stat().st_mtime_ns for r in fitting}
    assert main(args) == 0
    again = {r["criterion"]: (Path(r["run"]) / "pruned.pt2").stat().st_mtime_ns for r in fitting}
    assert again == stamps
