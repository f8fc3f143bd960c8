"""ruff (lint and Google docstring rules) and mypy (strict on the typed core) are clean.

Both are configured in pyproject.toml and come with the dev extra; mypy checks the modules its
``files`` list names, with ``--strict``'s flags set for them one by one.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MYPY = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
STRICT_MODULES = [
    "tinyprune.criteria.*",
    "tinyprune.pruning.*",
    "tinyprune.app.*",
    "tinyprune.config",
    "firmware_export.*",
]


def test_ruff_is_clean() -> None:
    if (
        shutil.which("ruff") is None
        and subprocess.run(
            [sys.executable, "-m", "ruff", "--version"], capture_output=True, check=False
        ).returncode
    ):
        pytest.skip("ruff is not installed (it comes with the dev extra)")
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", ".", "--output-format", "concise"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]


def _needs_mypy() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it comes with the dev extra)")


def test_mypy_is_clean() -> None:
    """The cache (.mypy_cache, keyed on file contents and options) keeps a re-run to seconds."""
    _needs_mypy()
    proc = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


def _strict_flags() -> list[str]:
    """The flags ``mypy --strict`` turns on, read from the installed mypy's help."""
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--help"], capture_output=True, text=True, check=True
    ).stdout
    block = out.split("--strict ", 1)[1].split("--disable-error-code", 1)[0]
    block = re.sub(r"-\s*\n\s*", "-", block)  # flags wrapped at their hyphens
    flags = re.findall(r"--([a-z][a-z-]+)", block)
    assert len(flags) >= 10, block
    return flags


def test_the_typed_core_gets_every_flag_of_strict() -> None:
    """``strict = true`` in an override would switch the flags on everywhere, so they are
    listed one by one; a mypy upgrade that adds a flag to ``--strict`` fails here."""
    _needs_mypy()
    (strict,) = [o for o in MYPY["overrides"] if o["module"] == STRICT_MODULES]
    missing = []
    for flag in _strict_flags():
        key, want = flag.replace("-", "_"), True
        if key.startswith("no_"):
            key, want = key[3:], False
        scope = MYPY if key in ("warn_redundant_casts", "warn_unused_configs") else strict
        if scope.get(key) is not want:
            missing.append(f"{key} = {str(want).lower()}")
    assert missing == []
    assert "ignore_missing_imports" not in MYPY  # only per module, for packages without types
    assert sorted(MYPY["files"]) == sorted(
        m.removesuffix(".*").replace(".", "/") + ("" if m.endswith(".*") else ".py")
        for m in STRICT_MODULES
    )
