"""Issue 13: publishing is all-or-nothing; SIGTERM is handled like SIGINT; stale staging goes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from firmware_export import publish
from tinyprune.cli import main
from tinyprune.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny_cnn.py"


def _calib(tmp_path: Path) -> Path:
    path = tmp_path / "calib.npy"
    np.save(path, np.random.default_rng(0).random((16, 1, 16, 16), dtype=np.float32))
    return path


def test_plain_file_named_saved_model_is_refused_before_anything_is_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"earlier run")
    (out / "report.json").write_text("{}")
    (out / "saved_model").write_text("not a folder")
    args = ["export", f"{EXAMPLE}:build", "--calib", str(_calib(tmp_path)), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "'saved_model'" in err and "nothing was replaced" in err
    assert (out / "model.onnx").read_bytes() == b"earlier run"
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "report.json", "saved_model"]


def test_publish_failure_midway_restores_the_earlier_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, work = tmp_path / "out", tmp_path / "out" / ".staging-1-x"
    work.mkdir(parents=True)
    for name in ("a.tflite", "b.json", "c.md"):
        (out / name).write_text(f"old {name}")
        (work / name).write_text(f"new {name}")
    (work / "saved_model").mkdir()
    (work / "saved_model" / "saved_model.pb").write_text("new pb")
    (out / "saved_model").mkdir()
    (out / "saved_model" / "saved_model.pb").write_text("old pb")
    real, calls = os.replace, []

    def flaky(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        calls.append(dst)
        if Path(src).parent == work and len([c for c in calls if Path(c).parent == out]) > 2:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    files = {"t": "a.tflite", "sm": "saved_model", "j": "b.json", "m": "c.md"}
    with pytest.raises(OSError):
        publish.publish(work, out, files)
    monkeypatch.undo()
    for name in ("a.tflite", "b.json", "c.md"):
        assert (out / name).read_text() == f"old {name}"
    assert (out / "saved_model" / "saved_model.pb").read_text() == "old pb"


def test_collision_check_names_a_folder_where_a_file_goes(tmp_path: Path) -> None:
    (tmp_path / "report.json").mkdir()
    with pytest.raises(ConfigError, match="a folder named 'report.json'"):
        publish.check_collisions(tmp_path, {"report.json": False, "saved_model": True})


def test_stale_staging_of_a_dead_process_is_removed_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".staging-{dead.pid}-abc"
    legacy = tmp_path / ".staging-k2j3h4"  # written by a tinyprune without the pid in the name
    live = tmp_path / f".staging-{os.getpid()}-def"
    for d in (stale, legacy, live):
        (d / "saved_model").mkdir(parents=True)
    removed = publish.remove_stale_staging(tmp_path)
    assert sorted(removed) == sorted([stale, legacy])
    assert live.is_dir() and not stale.exists() and not legacy.exists()


_SLOW_EXPORT = """
import sys, time
import firmware_export.convert as convert
def slow(*a, **k):
    print("converting", flush=True)
    time.sleep(60)
convert.convert_to_saved_model = slow
from tinyprune.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_export_exits_130_and_removes_staging(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / f".staging-{2**22 + 7}-old").mkdir()  # left by an earlier killed run
    cmd = [
        sys.executable,
        "-c",
        _SLOW_EXPORT,
        "export",
        f"{EXAMPLE}:build",
        "--calib",
        str(_calib(tmp_path)),
        "--out",
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while "converting" not in proc.stdout.readline():
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
    assert list(out.glob(".staging-*")), "the export should be running in its staging folder"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not list(out.glob(".staging-*"))
