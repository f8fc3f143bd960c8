"""Two-process CPU data-parallel training through torchrun: replicas must end bit-identical."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tinyprune.training import load_checkpoint

pytestmark = pytest.mark.timeout(120)


def test_two_replicas_train_identically(tmp_path: Path, torchrun: Any) -> None:
    args = ("--out", str(tmp_path), "--epochs", "2")
    proc = torchrun("ddp_smoke", *args, cwd=tmp_path, timeout=100)
    assert proc.returncode == 0, proc.stderr[-3000:]
    init, spec, _ = load_checkpoint(tmp_path / "init.pt")
    rank0, spec0, extra0 = load_checkpoint(tmp_path / "rank0.pt")
    rank1, _, extra1 = load_checkpoint(tmp_path / "rank1.pt")
    assert spec == spec0 == {"factory": "ddp_smoke:mlp", "kwargs": {}}
    assert (extra0["rank"], extra1["rank"]) == (0, 1)
    assert rank0.keys() == rank1.keys() == init.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"replicas differ in {key}"
        assert not torch.equal(rank0[key], init[key]), f"{key} did not train"

    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    steps = 2 * (64 // 2 // 8)  # 2 epochs, 64 samples split over 2 replicas, batch 8
    for rank, rep in enumerate(reports):
        hook = rep["hook"]
        assert (hook["rank"], hook["world_size"], hook["bare_model"]) == (rank, 2, True)
        assert hook["steps"] == list(range(1, steps + 1)) and rep["steps"] == steps
        assert hook["samples"] == 64  # each replica saw its half of 64 samples, twice
    # epoch losses are all-reduced, so every replica records the same history
    assert reports[0]["history"] == reports[1]["history"]
    assert reports[0]["history"][-1]["lr"] == 0.0  # cosine ends at zero
