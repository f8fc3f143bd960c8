"""``tinyprune infer`` on synthetic recordings: baselines, PURE/UBFC folders, outputs, errors."""

from __future__ import annotations

import json

import pytest

from tinyprune.cli import main
from tinyprune.runtime.pipeline import RppgPipeline

HR_TOL_BPM = 3.0  # the bound for synthetic videos


def _summary(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])["summary"]


@pytest.mark.parametrize("source", ["mjpg", "pure", "ubfc"])
def test_pos_reads_the_true_heart_rate(recordings, source, capsys):
    arg = {
        "mjpg": ["--video", str(recordings.mjpg)],
        "pure": ["--data", f"pure:{recordings.pure}"],
        "ubfc": ["--data", f"ubfc:{recordings.ubfc}"],
    }[source]
    assert main(["infer", "--method", "pos", *arg]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])["summary"]
    assert abs(summary["hr"] - recordings.hr) <= HR_TOL_BPM
    readings = [json.loads(ln) for ln in lines[:-1]]
    assert [r["t"] for r in readings] == [float(t) for t in range(4, 13)]  # one HR per second
    if source != "mjpg":  # the formats carry the device's HR
        assert abs(summary["device_hr"] - recordings.hr) <= 1.0


@pytest.mark.parametrize("method", ["chrom", "green"])
def test_other_baselines_run_in_the_same_pipeline(recordings, method):
    result = RppgPipeline(method=method).process_video(recordings.mjpg)
    assert abs(result["hr"] - recordings.hr) <= HR_TOL_BPM
    assert len(result["bvp"]) == len(result["timestamps"]) == result["frames"] == 360
    assert result["hrv"]["n_beats"] >= 10


def test_outputs_are_written(recordings, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "infer",
            "--method",
            "pos",
            "--video",
            str(recordings.mjpg),
            "--out",
            str(out),
            "--format",
            "csv",
        ]
    )
    assert code == 0
    csv_text = capsys.readouterr().out
    assert csv_text.startswith("t,hr,sqi,hr_method\n") and len(csv_text.splitlines()) == 10
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (out / "infer.html").read_text()
    assert json.loads((out / "result.json").read_text())["method"] == "pos"


def test_face_tracker_finds_the_face(recordings):
    import cv2

    from tinyprune.runtime.face import FaceTracker

    cap = cv2.VideoCapture(str(recordings.mjpg))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    r, c, h, w = FaceTracker(30.0)(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    fr, fc, fh, fw = recordings.face_box
    assert r <= fr + fh / 2 <= r + h and c <= fc + fw / 2 <= c + w  # face centre inside
    assert fh <= h <= 2.5 * fh  # enlarged 1.5x around a detection of about the face's size


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["infer", "--method", "pos"], "give exactly one of"),
        (["infer", "--video", "nope.avi"], "needs a model"),
        (["infer", "--method", "pos", "--video", "nope.avi"], "does not exist"),
        (["infer", "missing_run", "--video", "x.avi"], "no model at missing_run"),
        (["infer", "--method", "pos", "--data", "cifar:/x"], "expected pure:DIR or ubfc:DIR"),
    ],
)
def test_bad_input_exits_2_with_the_reason(argv, match, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert match in capsys.readouterr().err
