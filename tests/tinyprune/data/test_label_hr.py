"""Per-video label and device HR of PURE / UBFC-rPPG folders driven by heartpy's real PPG.

The fixtures are written by independent writers (frames by OpenCV's PNG encoder and Debian's
ffmpeg, JSON and ground-truth text by this file), not by tinyprune's own writers. Each video's
label is a real contact-PPG segment; its "device" HR is what an oximeter in beat-to-beat mode
reports: 60 / the inter-beat interval (heartpy's accepted beats) holding each sample, as an
integer. (An oximeter that averages over several beats lags, so its video mean differs from the
beat rate by up to ~1.5 bpm on these segments.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinyprune.data import build_dataset, pure, ubfc
from tinyprune.data.labels import label_hr

cv2 = pytest.importorskip("cv2")
FS, OXI_HZ, SIDE = 30.0, 60.0, 8
SEGMENTS = [(0, 0.0, 22.0), (1, 40.0, 30.0), (1, 60.0, 30.0), (2, 100.0, 30.0), (2, 300.0, 30.0)]


def _segment(hp: Any, k: int, start: float, dur: float) -> dict[str, np.ndarray]:
    """The recording's segment resampled to 60 Hz and 30 fps, and the oximeter's HR at 60 Hz."""
    data, timer = hp.load_exampledata(k)
    fs = {0: lambda: 100.0, 1: lambda: hp.get_samplerate_mstimer(timer)}.get(
        k, lambda: hp.get_samplerate_datetime(timer, "%Y-%m-%d %H:%M:%S.%f")
    )()
    x = np.asarray(data, float)[int(start * fs) : int((start + dur) * fs)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wd, _ = hp.process(x, fs)
    peaks = np.asarray(wd["peaklist"], float) / fs
    ok = np.asarray(wd["RR_masklist"]) == 0  # intervals heartpy accepts
    rr, t_rr = np.diff(peaks)[ok], peaks[1:][ok]
    t60, tf = np.arange(int(dur * OXI_HZ)) / OXI_HZ, np.arange(int(dur * FS)) / FS
    src = np.arange(x.size) / fs
    wave60 = np.interp(t60, src, x)
    code = np.rint(255 * (wave60 - wave60.min()) / np.ptp(wave60)).astype(int)  # 8-bit pleth
    step = np.clip(np.searchsorted(t_rr, t60), 0, rr.size - 1)  # the interval holding t
    hr60 = np.rint(60.0 / rr[step]).astype(int)
    return {"code60": code, "hr60": hr60, "frame_ppg": np.interp(tf, src, x), "n": tf.size}


def _frames(ppg: np.ndarray) -> np.ndarray:
    """Tiny BGR frames whose green follows the pulse (the loaders need frames, not a face)."""
    z = (ppg - ppg.mean()) / ppg.std()
    g = np.clip(np.rint(120 - 2 * z), 0, 255).astype(np.uint8)
    f = np.full((ppg.size, SIDE, SIDE, 3), (90, 0, 170), np.uint8)
    f[..., 1] = g[:, None, None]
    return f


def _write_pure(root: Path, ss: int, seg: dict[str, np.ndarray]) -> None:
    name = f"{ss:02d}-01"
    (root / name / name).mkdir(parents=True)
    t0 = 1_400_000_000_000_000_000
    stamps = [t0 + round(i * 1e9 / FS) for i in range(seg["n"])]
    for t, frame in zip(stamps, _frames(seg["frame_ppg"]), strict=True):
        assert cv2.imwrite(str(root / name / name / f"Image{t}.png"), frame)
    package = [
        {
            "Timestamp": t0 + round(i * 1e9 / OXI_HZ),
            "Value": {"waveform": int(w), "pulseRate": int(h)},
        }
        for i, (w, h) in enumerate(zip(seg["code60"], seg["hr60"], strict=True))
    ]
    doc = {"/FullPackage": package, "/Image": [{"Timestamp": t} for t in stamps]}
    (root / name / f"{name}.json").write_text(json.dumps(doc))


def _write_avi(path: Path, frames: np.ndarray) -> None:
    cmd = ["ffmpeg", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24"]
    cmd += ["-s", f"{SIDE}x{SIDE}", "-r", "30", "-i", "-", "-c:v", "rawvideo", str(path)]
    subprocess.run(cmd, input=frames.tobytes(), check=True, timeout=120)


def _write_ubfc(root: Path, n: int, seg: dict[str, np.ndarray], dataset: int) -> None:
    folder = root / f"subject{n}"
    folder.mkdir(parents=True)
    _write_avi(folder / "vid.avi", _frames(seg["frame_ppg"]))
    if dataset == 2:
        hr = np.interp(np.arange(seg["n"]) / FS, np.arange(seg["hr60"].size) / OXI_HZ, seg["hr60"])
        rows = (seg["frame_ppg"], hr, np.arange(seg["n"]) / FS)
        text = "\n".join(" ".join(f"{v:.7e}" for v in row) for row in rows)
        (folder / "ground_truth.txt").write_text(text + "\n")
    else:  # DATASET_1: gtdump.xmp, CSV rows time_ms,HR,SpO2,PPG at the oximeter's rate
        t_ms = np.arange(seg["hr60"].size) * 1000 / OXI_HZ
        lines = [
            f"{t:.0f},{h},98,{w}" for t, h, w in zip(t_ms, seg["hr60"], seg["code60"], strict=True)
        ]
        (folder / "gtdump.xmp").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def segments(heartpy: Any) -> list[dict[str, np.ndarray]]:
    return [_segment(heartpy, *s) for s in SEGMENTS]


def test_pure_label_hr_within_1_bpm_of_pulse_rate(
    segments: list[dict[str, np.ndarray]], tmp_path: Path
) -> None:
    for ss, seg in enumerate(segments, start=1):
        _write_pure(tmp_path, ss, seg)
    for name in pure.list_sequences(tmp_path):
        seq = pure.read_sequence(tmp_path, name)
        assert abs(label_hr(seq.bvp(), seq.fs) - seq.device_hr()) <= 1.0, name
    bundle = build_dataset(f"pure:{tmp_path}", size=4, chunk=10, detect=False, train_fraction=0.6)
    for split in (bundle.train, bundle.test):
        for v in np.unique(split.video):
            sel = split.video == v
            assert np.ptp(split.hr_bpm[sel]) == 0 and np.ptp(split.device_hr[sel]) == 0
            assert abs(split.hr_bpm[sel][0] - split.device_hr[sel][0]) <= 1.0
            assert 50 < split.hr_bpm[sel][0] < 110  # not a 10-frame chunk's 150-180 bpm
    assert bundle.test.video_names == ("04-01", "05-01")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="Debian's ffmpeg writes the AVI")
@pytest.mark.parametrize("dataset", [1, 2])
def test_ubfc_label_hr_within_1_bpm_of_device_hr(
    segments: list[dict[str, np.ndarray]], tmp_path: Path, dataset: int
) -> None:
    for n, seg in enumerate(segments, start=1):
        _write_ubfc(tmp_path, n, seg, dataset)
    for n in ubfc.list_subjects(tmp_path):
        s = ubfc.read_subject(tmp_path, n)
        assert s.n_frames == s.ppg.size and abs(s.fs - FS) < 1e-6
        assert abs(label_hr(s.ppg, s.fs) - s.device_hr()) <= 1.0, n
    bundle = build_dataset(f"ubfc:{tmp_path}", size=4, chunk=10, detect=False, train_fraction=0.6)
    dev, lab = bundle.test.device_hr, bundle.test.hr_bpm
    assert np.all(np.abs(lab - dev) <= 1.0) and bundle.test.video_names == ("subject4", "subject5")
