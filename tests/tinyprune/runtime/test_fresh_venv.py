"""``pip install -e .[pi]`` in a fresh venv: no torch, no TensorFlow, and ``tinyprune infer`` works.

Slow: pip resolves the pi extra over the package index (4-5 min here, ~25 s of it CPU; the wheels
come from pip's cache). The net test also trains and exports a small TS-CAN in the main venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import tinyprune

HR_TOL_BPM = 3.0  # the bound for synthetic videos
REPO = Path(tinyprune.__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def pi_venv(tmp_path_factory) -> Path:
    py = shutil.which("python3.11")
    if py is None:
        pytest.skip("python3.11 is not on PATH")
    venv = tmp_path_factory.mktemp("pi") / "venv"
    subprocess.run([py, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "-e", f"{REPO}[pi]"],
        check=True,
        env=_env(),
        timeout=1500,
    )
    return venv


def _infer(venv: Path, *args: str) -> dict:
    out = subprocess.run(
        [str(venv / "bin" / "tinyprune"), "infer", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])["summary"]


@pytest.mark.parametrize("module", ["torch", "tensorflow"])
def test_pi_venv_has_no_torch_or_tensorflow(pi_venv, module):
    probe = subprocess.run(
        [str(pi_venv / "bin" / "python"), "-c", f"import {module}"],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert probe.returncode != 0 and "No module named" in probe.stderr


def _source_args(recordings, source: str) -> list[str]:
    return {
        "mjpg": ["--video", str(recordings.mjpg)],
        "pure": ["--data", f"pure:{recordings.pure}"],
        "ubfc": ["--data", f"ubfc:{recordings.ubfc}"],
    }[source]


@pytest.mark.parametrize("source", ["mjpg", "pure", "ubfc"])
def test_pos_in_the_pi_venv(pi_venv, recordings, source):
    got = _infer(pi_venv, "--method", "pos", *_source_args(recordings, source))
    assert abs(got["hr"] - recordings.hr) <= HR_TOL_BPM


@pytest.mark.parametrize("source", ["mjpg", "pure", "ubfc"])
def test_int8_net_in_the_pi_venv(pi_venv, recordings, int8_net, source):
    got = _infer(pi_venv, str(int8_net), *_source_args(recordings, source))
    assert got["method"] == "net"
    assert abs(got["hr"] - recordings.hr) <= HR_TOL_BPM
