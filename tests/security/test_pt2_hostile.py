"""Hostile ``.pt2`` archives never run code: every unpickling / eval / exec path of torch
2.13's loader is refused with exit 2 (issue 13), while torch's own archives still load."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.security.hostile import HOSTILE, save_small_pt2
from tinyprune.cli import main
from tinyprune.errors import ConfigError
from tinyprune.safe_load import load_pt2


@pytest.fixture(scope="module")
def clean_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_small_pt2(tmp_path_factory.mktemp("pt2") / "small.pt2")


def test_a_plain_archive_loads_and_runs(clean_pt2: Path) -> None:
    program = load_pt2(clean_pt2)
    out = program.module()(torch.zeros(1, 3, 8, 8))
    assert out.shape == (1, 2)


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_archive_is_refused_in_process(kind: str, clean_pt2: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = HOSTILE[kind](clean_pt2, tmp_path / "evil.pt2", marker)
    with pytest.raises(ConfigError, match="refusing to load exported program") as info:
        program = load_pt2(evil)
        program.module()(torch.zeros(1, 3, 8, 8))  # reached only if the check failed
    assert str(evil) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["opaque_obj", "guards_code", "sympy_expr"])
def test_the_test_archives_run_code_under_plain_torch_export_load(
    kind: str, clean_pt2: Path, tmp_path: Path
) -> None:
    """The test archives really are hostile: plain torch.export.load runs them."""
    marker = tmp_path / "PWNED"
    evil = HOSTILE[kind](clean_pt2, tmp_path / "evil.pt2", marker)
    with contextlib.suppress(Exception):  # the payload runs before torch fails, if it does
        torch.export.load(str(evil)).module()(torch.zeros(1, 3, 8, 8))
    assert marker.exists()


def test_export_and_eval_of_the_issue_archive_exit_2(
    clean_pt2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The exact reproduction of issue 13 through the CLI: export and eval of a run."""
    marker = tmp_path / "PWNED"
    run = tmp_path / "run"
    run.mkdir()
    evil = HOSTILE["opaque_obj"](clean_pt2, run / "model.pt2", marker)
    calib = tmp_path / "c.npy"
    np.save(calib, np.zeros((4, 3, 8, 8), np.float32))
    out = tmp_path / "o"
    assert main(["export", str(evil), "--calib", str(calib), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "opaque_obj_0" in err and str(evil) in err and "pickled" in err
    assert main(["eval", str(run), "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert "refusing to load exported program" in err
    assert not marker.exists()
    assert not out.exists()
