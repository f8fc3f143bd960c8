"""Every bad input of `tinyprune export` / `report`.

Each gives a one-line error and its exit code, and nothing is written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tinyprune.cli import main

pytestmark = pytest.mark.tf

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny_cnn.py"


@pytest.fixture
def calib(tmp_path: Path) -> Path:
    path = tmp_path / "calib.npy"
    np.save(path, np.random.default_rng(0).random((4, 1, 16, 16), dtype=np.float32))
    return path


def _export(model: str, calib: Path, out: Path, *extra: str) -> int:
    return main(["export", model, "--calib", str(calib), "--out", str(out), *extra])


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("tinyprune: error:")
    return err[-1]


def test_missing_model_file(tmp_path: Path, calib: Path, capsys) -> None:
    assert _export(f"{tmp_path}/nope.py:build", calib, tmp_path / "run") == 2
    assert "does not exist" in _error(capsys)
    assert not (tmp_path / "run").exists()


def test_factory_that_raises(tmp_path: Path, calib: Path, capsys) -> None:
    f = tmp_path / "bad.py"
    f.write_text("def build():\n    raise RuntimeError('no weights here')\n")
    assert _export(f"{f}:build", calib, tmp_path / "run") == 2
    assert "raised RuntimeError: no weights here" in _error(capsys)


def test_calibration_shape_mismatch(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "c.npy"
    np.save(bad, np.zeros((4, 3, 16, 16), np.float32))
    assert _export(f"{EXAMPLE}:build", bad, tmp_path / "run") == 2
    assert "(3, 16, 16)" in _error(capsys) and not (tmp_path / "run").exists()


@pytest.mark.parametrize("bad_value", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_calibration(tmp_path: Path, capsys, bad_value: float) -> None:
    data = np.zeros((4, 1, 16, 16), np.float32)
    data[2, 0, 3, 4] = bad_value
    np.save(tmp_path / "c.npy", data)
    assert _export(f"{EXAMPLE}:build", tmp_path / "c.npy", tmp_path / "run") == 2
    assert "non-finite" in _error(capsys)


def test_empty_calibration(tmp_path: Path, capsys) -> None:
    np.save(tmp_path / "c.npy", np.zeros((0, 1, 16, 16), np.float32))
    assert _export(f"{EXAMPLE}:build", tmp_path / "c.npy", tmp_path / "run") == 2
    assert "empty" in _error(capsys)


def test_unknown_profile_suggests_the_closest(tmp_path: Path, calib: Path, capsys) -> None:
    assert _export(f"{EXAMPLE}:build", calib, tmp_path / "run", "--target", "cortex-m44") == 2
    assert "cortex-m4" in _error(capsys)


def test_malformed_profile_toml(tmp_path: Path, calib: Path, capsys) -> None:
    p = tmp_path / "board.toml"
    p.write_text("name = 'x'\nruntime = tflm\n")
    assert _export(f"{EXAMPLE}:build", calib, tmp_path / "run", "--target", str(p)) == 2
    assert "board.toml" in _error(capsys)


def test_corrupt_onnx(tmp_path: Path, calib: Path, capsys) -> None:
    p = tmp_path / "broken.onnx"
    p.write_bytes(b"\x08\x07garbage" * 10)
    assert _export(str(p), calib, tmp_path / "run") == 2
    assert "broken.onnx" in _error(capsys)


def test_corrupt_tflite(tmp_path: Path, capsys) -> None:
    p = tmp_path / "broken.tflite"
    p.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\xff" * 64)
    assert main(["report", str(p), "--target", "cortex-m4"]) == 2
    assert "tflite" in _error(capsys).lower()


def test_not_a_tflite(tmp_path: Path, capsys) -> None:
    p = tmp_path / "x.tflite"
    p.write_bytes(b"hello")
    assert main(["report", str(p), "--target", "cortex-m4"]) == 2
    assert "TFL3" in _error(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere; covered by the file case")
def test_output_folder_not_writable(tmp_path: Path, calib: Path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert _export(f"{EXAMPLE}:build", calib, locked / "run") == 2
    assert "--out" in _error(capsys)


def test_output_path_is_a_file(tmp_path: Path, calib: Path, capsys) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    assert _export(f"{EXAMPLE}:build", calib, f) == 2
    assert "--out" in _error(capsys)


def test_unreadable_calibration_file(tmp_path: Path, capsys) -> None:
    p = tmp_path / "c.npy"
    p.write_bytes(b"not numpy")
    assert _export(f"{EXAMPLE}:build", p, tmp_path / "run") == 2
    assert "c.npy" in _error(capsys)
