"""`tailored` under torchrun (issue 17): inserted gates and SELECT state identical on replicas.

Two CPU replicas train a BatchNorm-free net on different data shards with tailored's hook
(``tests/helpers/ddp_tailored_smoke.py``); the gates are inserted before DDP wraps the model
(``early``, as ``tinyprune prune`` does) or after it (``late``, a bare hook).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ddp_tailored_smoke as smoke
import pytest
import torch

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, torchrun: Any) -> Path:
    out = tmp_path_factory.mktemp("ddp_tailored")
    proc = torchrun("ddp_tailored_smoke", "--out", str(out), cwd=out, timeout=220)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _report(out: Path, rank: int, way: str) -> dict[str, Any]:
    return json.loads((out / f"rank{rank}_{way}.json").read_text())


@pytest.mark.parametrize("way", smoke.WAYS)
def test_gates_and_select_state_are_identical_on_every_replica(run_dir: Path, way: str) -> None:
    r0, r1 = _report(run_dir, 0, way), _report(run_dir, 1, way)
    gates = r0["gates"]
    # every conv got a gate (no BatchNorm) and training moved them: identity is not trivial
    assert len(gates) == 3
    flat = [g for layer in gates.values() for g in layer]
    assert any(abs(g) < 0.01 for g in flat) and any(0.01 < abs(g - 1.0) < 0.9 for g in flat)
    assert r0["gates"] == r1["gates"]  # bit for bit
    assert r0["keep"] == r1["keep"]
    assert r0["lambda"] == r1["lambda"]
    assert r0["history"] == r1["history"]


@pytest.mark.parametrize("way", smoke.WAYS)
def test_replicas_hard_prune_to_the_same_weights(run_dir: Path, way: str) -> None:
    s0 = torch.load(run_dir / f"rank0_{way}.pt", weights_only=True)
    s1 = torch.load(run_dir / f"rank1_{way}.pt", weights_only=True)
    assert s0.keys() == s1.keys()
    assert not any("tailored_gate" in k for k in s0)  # folded at the hard prune
    assert all(torch.equal(s0[k], s1[k]) for k in s0)
    widths = [s0[f"{i}.weight"].shape[0] for i in (0, 2, 4)]
    assert widths != [12, 16, 16]  # channels were removed


def test_the_shards_differ() -> None:
    """Without the gradient average the replicas would see different data and drift apart."""
    assert not torch.equal(smoke.shard_data(0).tensors[0], smoke.shard_data(1).tensors[0])
