"""PURE format: synthetic writer -> reader round trip and clear errors (docs/methods.md §8.1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tinyprune.data import build_dataset, pure
from tinyprune.data.synthetic import SyntheticConfig, SyntheticVideo, generate, write_pure
from tinyprune.errors import ConfigError


@pytest.fixture(scope="module")
def video() -> SyntheticVideo:
    return generate(
        SyntheticConfig(seed=5, duration_s=3.0, frame_size=(72, 96), face_px=40, hr_bpm=75.0)
    )


def _z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / x.std()


def test_round_trip_frames_bit_exact_labels_close(video: SyntheticVideo, tmp_path: Path) -> None:
    write_pure(video, tmp_path, 3, 2)
    assert pure.list_sequences(tmp_path) == ["03-02"]
    seq = pure.read_sequence(tmp_path, "03-02")
    frames = seq.read_all()
    assert frames.dtype == np.uint8 and np.array_equal(frames, video.frames)
    assert seq.subject == 3 and abs(seq.fs - 30.0) < 1e-3
    truth = _z(video.bvp.astype(np.float64))
    by_time, by_index = seq.bvp("timestamp"), seq.bvp("index")
    assert by_time.shape == by_index.shape == (len(frames),)
    # frame times fall on every other 60 Hz sample: only the integer encoding differs
    assert np.max(np.abs(_z(by_time) - truth)) < 0.05
    # the toolbox's index rule stretches 180 samples over 90 frames: close, not exact
    assert np.corrcoef(by_index, truth)[0, 1] > 0.95
    with pytest.raises(ConfigError, match="expected 'index' or 'timestamp'"):
        seq.bvp("nearest")
    assert np.all(np.abs(seq.pulse_rate - 75.0) < 12)


def test_missing_root_and_empty_root(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        pure.list_sequences(tmp_path / "nope")
    with pytest.raises(ConfigError, match="no PURE sequences"):
        pure.list_sequences(tmp_path)


def test_missing_json_is_named(video: SyntheticVideo, tmp_path: Path) -> None:
    write_pure(video, tmp_path, 1, 1)
    (tmp_path / "01-01" / "01-01.json").unlink()
    with pytest.raises(ConfigError, match=r"01-01\.json"):
        pure.read_sequence(tmp_path, "01-01")


@pytest.mark.parametrize(
    "doc,match",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"/Image": []}), "lacks the PURE keys"),
        (
            json.dumps({"/FullPackage": [{"Timestamp": 1}], "/Image": [{"Timestamp": 1}]}),
            "malformed '/FullPackage'",
        ),
    ],
)
def test_malformed_json(video: SyntheticVideo, tmp_path: Path, doc: str, match: str) -> None:
    write_pure(video, tmp_path, 1, 1)
    (tmp_path / "01-01" / "01-01.json").write_text(doc)
    with pytest.raises(ConfigError, match=match):
        pure.read_sequence(tmp_path, "01-01")


def test_missing_frame_is_reported(video: SyntheticVideo, tmp_path: Path) -> None:
    write_pure(video, tmp_path, 1, 1)
    first = sorted((tmp_path / "01-01" / "01-01").glob("Image*.png"))[0]
    first.unlink()
    with pytest.raises(ConfigError, match="missing"):
        pure.read_sequence(tmp_path, "01-01")


def test_build_dataset_from_pure_folder(video: SyntheticVideo, tmp_path: Path) -> None:
    for ss in (1, 2):
        write_pure(video, tmp_path, ss, 1)
    bundle = build_dataset(f"pure:{tmp_path}", size=16, chunk=30, train_fraction=0.5)
    assert bundle.task == "rppg" and bundle.input_shape == (3, 30, 16, 16)
    assert len(bundle.train) == 3 and len(bundle.test) == 3
    assert bundle.info["train_subjects"] == [1] and bundle.info["test_subjects"] == [2]
    x, y = bundle.train[0]
    assert tuple(x.shape) == (3, 30, 16, 16) and tuple(y.shape) == (30,)
    # every 1 s clip carries the label HR of its whole (3 s) video, and the device's pulseRate
    assert bundle.test.hr_bpm.shape == (3,) and np.ptp(bundle.test.hr_bpm) == 0
    assert abs(bundle.test.hr_bpm[0] - video.hr_mean) < 3.0
    assert abs(bundle.test.device_hr[0] - video.hr_mean) < 1.0
    assert bundle.test.video_names == ("02-01",)
