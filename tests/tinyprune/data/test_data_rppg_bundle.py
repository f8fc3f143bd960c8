"""Preprocessing (docs/methods.md §8.3) and the synthetic-rppg bundle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinyprune.data import build_dataset
from tinyprune.data.preprocess import (
    PreprocessConfig,
    chunk,
    detect_face_box,
    diff_normalize,
    diff_normalize_label,
    fft_hr,
    standardize,
)
from tinyprune.data.synthetic import SyntheticConfig, generate
from tinyprune.errors import ConfigError


def test_detector_finds_the_rendered_face() -> None:
    video = generate(SyntheticConfig(seed=0, duration_s=0.1, frame_size=(240, 320), face_px=80))
    r, c, h, w = detect_face_box(video.frames[0], enlarge=1.5)
    fr, fc, fh, fw = video.face_box
    assert abs((r + h / 2) - (fr + fh / 2)) < 0.2 * fh
    assert abs((c + w / 2) - (fc + fw / 2)) < 0.2 * fw
    assert 1.1 * fh < h < 2.0 * fh  # enlarged 1.5x around a detection of about the face size


def test_detector_falls_back_to_centre_crop() -> None:
    frame = np.full((60, 80, 3), 90, np.uint8)
    r, c, h, w = detect_face_box(frame)
    assert h == w and abs(r + h / 2 - 30) <= 1 and abs(c + w / 2 - 40) <= 1


def test_normalisations_follow_the_toolbox() -> None:
    x = np.random.default_rng(0).integers(1, 255, (5, 4, 4, 3)).astype(np.uint8)
    d = diff_normalize(x)
    xf = x.astype(np.float64)
    raw = (xf[1:] - xf[:-1]) / (xf[1:] + xf[:-1] + 1e-7)
    np.testing.assert_allclose(d[:-1], raw / raw.std(), rtol=1e-4, atol=1e-5)
    assert np.all(d[-1] == 0)
    s = standardize(x)
    assert abs(s.mean()) < 1e-5 and abs(s.std() - 1) < 1e-4
    y = np.array([0.0, 1.0, 3.0, 2.0])
    np.testing.assert_allclose(diff_normalize_label(y)[:3], np.diff(y) / np.diff(y).std(), 1e-6)
    xc, yc = chunk(np.arange(10)[:, None], np.arange(10), 4)
    assert xc.shape == (2, 4, 1) and yc.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ConfigError, match="must match"):
        chunk(np.zeros(3), np.zeros(4), 2)
    with pytest.raises(ConfigError):
        PreprocessConfig(data_types=("Diff",))


def test_fft_hr_of_a_sine() -> None:
    t = np.arange(0, 20, 1 / 30)
    assert abs(fft_hr(np.sin(2 * np.pi * 1.3 * t), 30.0) - 78.0) < 1.0


def test_synthetic_bundle_contract() -> None:
    b = build_dataset(
        "synthetic-rppg", n_train=2, n_val=1, n_test=2, clips_per_video=1, size=16, chunk=32
    )
    assert b.task == "rppg" and b.input_shape == (3, 32, 16, 16) and b.fs == 30.0
    assert (len(b.train), len(b.val), len(b.test)) == (2, 1, 2)
    x, y = b.train[0]
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, 32, 16, 16) and y.shape == (32,)
    real = b.extras["real_ppg"]
    assert len(real) == 3 and np.all((real.hr_bpm > 40) & (real.hr_bpm < 140))
    assert all(36 < b.test.clip_hr(i) < 150 for i in range(len(b.test)))
    cal = b.calibration_batches(2)
    assert cal.shape == (2, 3, 32, 16, 16)
    again = build_dataset(
        "synthetic-rppg",
        n_train=2,
        n_val=1,
        n_test=2,
        clips_per_video=1,
        size=16,
        chunk=32,
        real_ppg=False,
    )
    assert np.array_equal(cal, again.calibration_batches(2))
    assert not np.array_equal(b.train.x[0], b.val.x[0])
