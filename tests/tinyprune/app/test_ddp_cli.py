"""`tinyprune train` / `prune` under torchrun: two replicas, one run folder written by rank 0."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_runs import prune_argv, write_board, write_slow_board

from tinyprune.training import load_checkpoint

pytestmark = pytest.mark.timeout(240)


def test_prune_under_torchrun_writes_one_consistent_run(tmp_path: Path, torchrun: Any) -> None:
    out = tmp_path / "run"
    flags = ["--target-flops", "0.5", "--epochs", "2", "--finetune-epochs", "1", "--lr", "3e-3"]
    args = prune_argv("bn_scale", out, *flags)
    proc = torchrun("tinyprune.cli", *args, cwd=tmp_path, timeout=220)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prune"]["macs_after"] <= 0.5 * summary["prune"]["macs_before"]
    state, spec, _ = load_checkpoint(out / "checkpoint.pt")
    assert spec["source"] == "zoo:micro_cnn"
    assert not list(out.glob(".*.tmp*"))  # rank 1 wrote nothing half-way
    # the checkpoint's widths are the pruned ones
    kept = {name: len(idx) for name, idx in summary["prune"]["keep"].items()}
    for name, width in kept.items():
        assert state[f"{name}.weight"].shape[0] == width


def _prune_to_board(
    torchrun: Any, tmp_path: Path, flash: int, *extra: str
) -> subprocess.CompletedProcess[str]:
    """`tinyprune prune zoo:micro_cnn --criterion l1 --target board.toml` on two replicas."""
    board = write_board(tmp_path, flash)
    args = prune_argv("l1", tmp_path / "run", "--epochs", "1", *extra, "--target", str(board))
    return torchrun("tinyprune.cli", *args, cwd=tmp_path, timeout=220)


@pytest.mark.tf
def test_target_profile_under_torchrun_fits_and_agrees(tmp_path: Path, torchrun: Any) -> None:
    """Rank 0 searches with real exports; both replicas prune to its fraction together."""
    proc = _prune_to_board(torchrun, tmp_path, 9000, "--finetune-epochs", "1", "--lr", "3e-3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "run"
    summary = json.loads((out / "summary.json").read_text())
    target = summary["target"]
    assert target["fits"] and target["flash_bytes"] <= 9000
    assert 0.0 < target["fraction"] < 1.0 and not target["tried"][0]["fits"]
    state, _, _ = load_checkpoint(out / "checkpoint.pt")
    for name, idx in summary["prune"]["keep"].items():
        assert state[f"{name}.weight"].shape[0] == len(idx)


@pytest.mark.tf
def test_unfittable_profile_under_torchrun_fails_on_every_rank(
    tmp_path: Path, torchrun: Any
) -> None:
    proc = _prune_to_board(torchrun, tmp_path, 1000)
    assert proc.returncode != 0
    assert proc.stderr.count("cannot fit") >= 2, proc.stderr[-3000:]  # both ranks say why
    assert not (tmp_path / "run").exists()


@pytest.mark.tf
@pytest.mark.timeout(900)  # two criteria, six exports, then the resumed run
def test_fit_under_torchrun_fits_agrees_and_resumes(tmp_path: Path, torchrun: Any) -> None:
    """Rank 0 exports and writes; both replicas prune every candidate alike; a re-run resumes."""
    board = write_slow_board(tmp_path)  # 1.5 ms binds: candidates prune at rank 0's fraction
    out = tmp_path / "fit"
    args = ["fit", "zoo:micro_cnn", "--data", "digits", "--target", str(board)]
    args += ["--criteria", "l1,random", "--epochs", "1", "--finetune-epochs", "1"]
    args += ["--lr", "3e-3", "--search-steps", "1", "--out", str(out)]
    proc = torchrun("tinyprune.cli", *args, cwd=tmp_path, timeout=700)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fit = json.loads((out / "fit.json").read_text())
    fitting = [r for r in fit["candidates"] if r["fits"]]
    assert len(fitting) == 2 and all(r["latency_ms"] <= 1.5 for r in fitting)
    best = max(fitting, key=lambda r: r["metric"]["accuracy"])
    assert fit["winner"] == best["criterion"]
    report = json.loads((out / "export" / "report.json").read_text())
    assert report["budget_ok"] and report["flash_bytes"] == best["flash_bytes"]
    for r in fitting:  # the replicas pruned to rank 0's fraction: the saved widths say so
        summary = json.loads((Path(r["run"]) / "summary.json").read_text())
        assert summary["target"]["fraction"] < 1.0 and summary["target"]["fits"]
        state, _, _ = load_checkpoint(Path(r["run"]) / "checkpoint.pt")
        for name, idx in summary["prune"]["keep"].items():
            assert state[f"{name}.weight"].shape[0] == len(idx)
    assert not list(out.rglob(".*.tmp*"))  # nothing half-written by a second writer
    stamps = {r["criterion"]: (Path(r["run"]) / "pruned.pt2").stat().st_mtime_ns for r in fitting}
    again = torchrun("tinyprune.cli", *args, cwd=tmp_path, timeout=180)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {
        r["criterion"]: (Path(r["run"]) / "pruned.pt2").stat().st_mtime_ns for r in fitting
    } == stamps  # resumed: no candidate redone
    assert json.loads((out / "fit.json").read_text())["winner"] == fit["winner"]
