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


@pytest.fixture(scope="session")
def heartpy() -> object:
    """The heartpy module, importable although setuptools >= 81 dropped ``pkg_resources``.

    heartpy uses ``pkg_resources.resource_filename`` only to locate its bundled example data;
    when ``pkg_resources`` is missing, a two-line stand-in (a module's resources sit beside its
    file) is registered first. Skips when heartpy itself is not installed.
    """
    import importlib.util
    import types

    spec = importlib.util.find_spec("heartpy")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("heartpy is not installed")
    if importlib.util.find_spec("pkg_resources") is None and "pkg_resources" not in sys.modules:
        stub = types.ModuleType("pkg_resources")

        def resource_filename(package: str, name: str) -> str:
            found = importlib.util.find_spec(package)
            assert found is not None and found.origin is not None
            return str(Path(found.origin).parent / name)

        stub.resource_filename = resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = stub
    import heartpy as hp

    return hp
