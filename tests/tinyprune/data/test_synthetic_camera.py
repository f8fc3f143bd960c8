"""The synthetic-rppg data set's sensor model: noisy by default, per video, reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from tinyprune.data import build_dataset
from tinyprune.data.builders import camera_settings
from tinyprune.data.synthetic import SyntheticConfig, generate
from tinyprune.errors import ConfigError

BASE = {"duration_s": 1.0, "fs": 30.0, "crop": 16, "nuisances": ("static",), "amplitude": 0.003}


def _small(camera: str):
    return build_dataset(
        "synthetic-rppg",
        n_train=3,
        n_val=1,
        n_test=1,
        clips_per_video=1,
        size=16,
        chunk=8,
        real_ppg=False,
        camera=camera,
    )


def test_random_camera_draws_each_videos_own_noise_reproducibly() -> None:
    drawn = [camera_settings(seed, BASE | {"camera": "random"}) for seed in range(40)]
    assert all(d["nuisances"] == ("static", "camera") for d in drawn)
    shots = [d["shot_noise_dn"] for d in drawn]
    assert min(shots) >= 0.5 and max(shots) <= 3.0 and len(set(shots)) == 40
    assert 5 < sum(d["gamma"] for d in drawn) < 35
    assert camera_settings(7, BASE | {"camera": "random"}) == drawn[7]
    assert "camera" not in camera_settings(7, BASE | {"camera": "random"})


def test_off_is_the_noise_free_renderer_and_fixed_its_preset() -> None:
    assert camera_settings(3, BASE | {"camera": "off"}) == BASE
    fixed = camera_settings(3, BASE | {"camera": "fixed"})
    assert fixed == BASE | {"nuisances": ("static", "camera")}
    clean = generate(SyntheticConfig(seed=3, **BASE)).frames.astype(float)
    noisy = generate(SyntheticConfig(seed=3, **fixed)).frames.astype(float)
    assert 0.5 < np.std(noisy - clean) < 4.0  # DN: the preset's shot + read noise


def test_the_data_set_is_noisy_by_default_and_off_keeps_the_old_clips() -> None:
    default, off = _small("random"), _small("off")
    assert default.info["camera"] == "random"
    assert not np.allclose(default.train.x, off.train.x)
    np.testing.assert_array_equal(default.train.y, off.train.y)  # same pulses, other pixels
    np.testing.assert_array_equal(off.train.x, _small("off").train.x)


def test_an_unknown_camera_mode_is_refused() -> None:
    with pytest.raises(ConfigError, match="camera='noisy' is not one of: random, fixed, off"):
        _small("noisy")
