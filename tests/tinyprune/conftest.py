"""Fixtures shared by the tinyprune tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def torchrun() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run(module, *args, cwd=..., timeout=...)``: ``python -m MODULE ARGS`` on two CPU replicas.

    Launched with ``torch.distributed.run --standalone --nproc_per_node 2``, one torch thread
    per replica; returns the finished process (output captured, never raises on failure).
    """

    def run(module: str, *args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += ["--nproc_per_node", "2", "-m", module, *args]
        helpers = str(Path(__file__).resolve().parents[1] / "helpers")
        path = os.pathsep.join(p for p in (helpers, os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
        return subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )

    return run
