"""GREEN / CHROM / POS recover the HR of synthetic face videos (tinyprune.data.synthetic)."""

from __future__ import annotations

import numpy as np
import pytest

from tinyprune.data.synthetic import SyntheticConfig, generate
from tinyprune.errors import ConfigError
from tinyprune.runtime.hr import estimate_hr
from tinyprune.runtime.unsupervised import METHODS, unsupervised_bvp


@pytest.fixture(scope="module")
def traces() -> list[tuple[np.ndarray, float, float]]:
    """(skin RGB mean per frame, fs, generator HR) of three 20 s videos with camera noise."""
    out = []
    for seed, hr in ((1, 58.0), (2, 84.0), (3, 121.0)):
        v = generate(
            SyntheticConfig(
                seed=seed, duration_s=20.0, crop=36, hr_bpm=hr, nuisances=("static", "camera")
            )
        )
        out.append((v.frames[:, v.skin_mask].mean(axis=1).astype(float), v.fs, v.hr_mean))
    return out


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_recovers_hr_within_3_bpm(
    traces: list[tuple[np.ndarray, float, float]], method: str
) -> None:
    for rgb, fs, truth in traces:
        assert abs(estimate_hr(unsupervised_bvp(method, rgb, fs), fs).bpm - truth) <= 3.0


def test_chrom_and_pos_cancel_a_common_brightness_change(
    traces: list[tuple[np.ndarray, float, float]],
) -> None:
    """A 1.5 Hz flicker in all channels alike (intensity, not colour) moves GREEN, not CHROM/POS."""
    rgb, fs, truth = traces[0]
    t = np.arange(len(rgb)) / fs
    flicker = rgb * (1 + 0.02 * np.sin(2 * np.pi * 1.5 * t))[:, None]
    assert abs(estimate_hr(unsupervised_bvp("green", flicker, fs), fs).bpm - 90.0) < 2.0
    for method in ("chrom", "pos"):
        assert abs(estimate_hr(unsupervised_bvp(method, flicker, fs), fs).bpm - truth) <= 3.0


@pytest.mark.parametrize(
    ("rgb", "method", "match"),
    [
        (np.ones((100, 4)), "pos", "shape"),
        (np.ones((20, 3)), "chrom", "needs >= "),
        (np.ones((100, 3)), "ica", "not one of"),
        (-np.ones((100, 3)), "pos", "non-positive"),
    ],
)
def test_bad_traces_are_a_config_error(rgb: np.ndarray, method: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        unsupervised_bvp(method, rgb, 30.0)
