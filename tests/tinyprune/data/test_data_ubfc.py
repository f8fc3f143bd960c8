"""UBFC-rPPG format and the uncompressed AVI codec: round trip and clear errors (§8.2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinyprune.data import avi, build_dataset, ubfc
from tinyprune.data.synthetic import SyntheticConfig, SyntheticVideo, generate, write_ubfc
from tinyprune.errors import ConfigError


@pytest.fixture(scope="module")
def video() -> SyntheticVideo:
    return generate(SyntheticConfig(seed=9, duration_s=2.0, frame_size=(60, 82), face_px=36))


@pytest.mark.parametrize("shape", [(3, 5, 7, 3), (2, 4, 8, 3)])  # odd width exercises row padding
def test_avi_round_trip_bit_exact(tmp_path: Path, shape: tuple[int, ...]) -> None:
    frames = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    path = avi.write_avi(tmp_path / "v.avi", frames, 29.97)
    info = avi.read_avi_info(path)
    assert (info.width, info.height, info.bit_count) == (shape[2], shape[1], 24)
    assert abs(info.fps - 29.97) < 1e-6 and info.declared_frames == shape[0]
    back, fps = avi.read_avi(path)
    assert np.array_equal(back, frames) and abs(fps - 29.97) < 1e-6
    assert np.array_equal(avi.read_avi(path, max_frames=1)[0], frames[:1])
    assert path.read_bytes()[:4] == b"RIFF" and path.read_bytes()[8:12] == b"AVI "


def test_avi_rejects_other_files_and_codecs(tmp_path: Path) -> None:
    bogus = tmp_path / "x.avi"
    bogus.write_bytes(b"not a video at all")
    with pytest.raises(ConfigError, match="not a RIFF AVI"):
        avi.read_avi(bogus)
    good = avi.write_avi(tmp_path / "y.avi", np.zeros((1, 2, 2, 3), np.uint8), 30)
    data = bytearray(good.read_bytes())
    at = data.index(b"strf") + 8 + 16  # biCompression field of the BITMAPINFOHEADER
    data[at : at + 4] = b"MJPG"
    good.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="MJPG"):
        avi.read_avi(good)


def test_ubfc_round_trip(video: SyntheticVideo, tmp_path: Path) -> None:
    write_ubfc(video, tmp_path, 4)
    assert ubfc.list_subjects(tmp_path) == [4]
    subj = ubfc.read_subject(tmp_path, 4)
    frames = subj.read_all()
    assert np.array_equal(frames, video.frames)
    assert len(frames) == subj.ppg.size == subj.hr.size == subj.times.size == subj.n_frames
    np.testing.assert_allclose(subj.ppg, video.bvp, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(subj.hr, video.hr, rtol=1e-6)
    np.testing.assert_allclose(subj.times, np.arange(len(frames)) / 30.0, atol=1e-9)
    assert abs(subj.fs - 30.0) < 1e-9
    text = (tmp_path / "subject4" / "ground_truth.txt").read_text().splitlines()
    assert len(text) == 3 and "e" in text[2].split()[1]  # scientific notation


def test_ubfc_errors(video: SyntheticVideo, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        ubfc.list_subjects(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no UBFC-rPPG subjects"):
        ubfc.list_subjects(tmp_path)
    write_ubfc(video, tmp_path, 1)
    gt = tmp_path / "subject1" / "ground_truth.txt"
    gt.write_text("1 2 3\n4 5\n")
    with pytest.raises(ConfigError, match="expected 3"):
        ubfc.read_subject(tmp_path, 1)
    gt.write_text("1 2 3\n4 5\n0 1 2\n")
    with pytest.raises(ConfigError, match="same count"):
        ubfc.read_subject(tmp_path, 1)
    (tmp_path / "subject1" / "vid.avi").unlink()
    with pytest.raises(ConfigError, match="lacks vid.avi"):
        ubfc.read_subject(tmp_path, 1)


def test_build_dataset_from_ubfc_folder_detects_the_face(tmp_path: Path) -> None:
    for n in (1, 2):
        v = generate(SyntheticConfig(seed=n, duration_s=2.0, frame_size=(120, 160), face_px=48))
        write_ubfc(v, tmp_path, n)
    bundle = build_dataset(
        f"ubfc:{tmp_path}",
        size=24,
        chunk=20,
        train_fraction=0.5,
        data_types=("DiffNormalized", "Standardized"),
    )
    assert bundle.input_shape == (6, 20, 24, 24) and len(bundle.train) == 3
    assert bundle.fs == pytest.approx(30.0)
    assert bundle.calibration_batches(2).shape == (2, 6, 20, 24, 24)
