"""The README's commands stay true: CI runs exactly its test command; the lean import holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# (kept out of tests/ itself: a test file there would put tests/ on sys.path, and the namespace
# folders tests/tinyprune, tests/firmware_export would then shadow the installed packages)
ROOT = Path(__file__).resolve().parents[2]


def _test_command_in_ci() -> str:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return next(line for line in lines if "pytest" in line and not line.startswith("#"))


def test_ci_runs_the_readme_test_command() -> None:
    command = _test_command_in_ci()
    assert "venv" in command and "pytest" in command
    assert command in (ROOT / "README.md").read_text()


def test_import_tinyprune_is_lean() -> None:
    code = (
        "import sys, tinyprune, tinyprune.criteria, tinyprune.models, tinyprune.training, "
        "firmware_export; bad = [m for m in ('tensorflow', 'onnx', 'onnx2tf', 'tflite_micro') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
