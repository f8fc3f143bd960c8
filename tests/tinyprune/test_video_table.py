"""metrics.video_table / video_metrics: per-video HR with label and device HR."""

from __future__ import annotations

import numpy as np
import pytest

from tinyprune.errors import ConfigError
from tinyprune.metrics import video_metrics, video_table

FS = 30.0


def _clips(bpm: float, n_clips: int, chunk: int = 10, phase: float = 0.0) -> np.ndarray:
    t = np.arange(n_clips * chunk) / FS
    x = np.sin(2 * np.pi * bpm / 60 * t + phase) + 0.5 * np.sin(4 * np.pi * bpm / 60 * t)
    return np.diff(x, prepend=x[0]).reshape(n_clips, chunk)  # DiffNormalized-like predictions


def test_table_has_one_row_per_video_and_prefers_the_device_hr() -> None:
    a, b = _clips(66.0, 60), _clips(96.0, 60, phase=1.0)
    bvp = np.concatenate([a, b])
    video = np.repeat([0, 1], 60)
    label = np.repeat([65.0, 97.0], 60)
    device = np.repeat([66.5, 95.0], 60)
    rows = video_table(bvp, video, label, FS, labels=bvp, device_hr=device, names=["s1", "s2"])
    assert [r["video"] for r in rows] == ["s1", "s2"]
    assert abs(rows[0]["pred_hr"] - 66.0) < 0.5 and abs(rows[1]["pred_hr"] - 96.0) < 0.5
    assert abs(rows[0]["label_hr"] - 66.0) < 0.5  # from the label waveform, not the given 65
    assert rows[0]["device_hr"] == 66.5 and rows[0]["ref_hr"] == 66.5 and rows[0]["sqi"] > 5
    m = video_metrics(rows)
    assert m["reference"] == "device" and m["mae"] == pytest.approx(
        np.mean([abs(rows[0]["pred_hr"] - 66.5), abs(rows[1]["pred_hr"] - 95.0)])
    )
    no_device = video_metrics(video_table(bvp, video, label, FS))
    assert no_device["reference"] == "label" and abs(no_device["mae"] - 1.0) < 0.5


def test_mismatched_lengths_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="video ids"):
        video_table(_clips(70.0, 20), np.zeros(19), np.zeros(20), FS)
    with pytest.raises(ConfigError, match="no videos"):
        video_metrics([])
