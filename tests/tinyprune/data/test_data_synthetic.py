"""Ground truth of the synthetic rPPG generator (docs/methods.md §10.5)."""

from __future__ import annotations

import numpy as np
import pytest

from tinyprune.data.pulse import heartpy_pulse, load_heartpy_recording, synthesize_pulse
from tinyprune.data.synthetic import SyntheticConfig, generate
from tinyprune.errors import ConfigError


def _fft_hr(x: np.ndarray, fs: float) -> float:
    """Zero-padded periodogram peak in 0.6-3.3 Hz, in bpm (fine bins: 2**16 points)."""
    x = np.asarray(x, np.float64) - np.mean(x)
    freqs = np.fft.rfftfreq(1 << 16, 1 / fs)
    power = np.abs(np.fft.rfft(x, 1 << 16)) ** 2
    band = (freqs >= 0.6) & (freqs <= 3.3)
    return float(60 * freqs[band][np.argmax(power[band])])


@pytest.mark.parametrize("hr", [55.0, 90.0, 135.0])
def test_pulse_hr_recovered_from_its_bvp(hr: float) -> None:
    pulse = synthesize_pulse(np.random.default_rng(3), 40.0, hr_bpm=hr, hr_drift_bpm=0.0)
    t = np.arange(0, 40.0, 1 / 30)
    assert abs(_fft_hr(pulse.at(t), 30.0) - hr) < 1.0
    assert abs(pulse.mean_hr(0.0, 40.0) - hr) < 1.0


def test_video_bvp_and_hr_ground_truth_agree() -> None:
    video = generate(SyntheticConfig(seed=4, duration_s=30.0, crop=16, hr_bpm=80.0))
    assert video.frames.shape == (900, 16, 16, 3) and video.bvp.shape == (900,)
    assert video.hr.shape == (900,)
    assert abs(_fft_hr(video.bvp, video.fs) - video.hr_mean) < 1.0
    assert np.all(np.abs(video.hr - 80.0) < 8.0 * 1.06 + 3)  # drift <= 8 bpm, RSA <= 5 %


def test_green_trace_of_static_noise_free_clip_gives_set_hr() -> None:
    cfg = SyntheticConfig(
        seed=7, duration_s=30.0, hr_bpm=72.0, hr_drift_bpm=0.0, rsa=False, respiration=False
    )
    video = generate(cfg)
    green = video.frames[:, :, :, 1][:, video.skin_mask].astype(np.float64).mean(axis=1)
    assert abs(_fft_hr(green, video.fs) - 72.0) < 1.0
    # skin gets darker with more blood: the trace is anti-correlated with the label
    assert np.corrcoef(green, video.bvp)[0, 1] < -0.9
    depth = (green.max() - green.min()) / green.mean()
    assert 0.5 * 2 * cfg.amplitude < depth < 1.5 * 2 * cfg.amplitude


def test_background_carries_no_pulse() -> None:
    video = generate(SyntheticConfig(seed=7, duration_s=4.0, hr_bpm=72.0))
    corner = video.frames[:, :8, :8, 1].astype(np.float64)
    assert np.ptp(corner.mean(axis=(1, 2))) == 0.0


def test_same_seed_identical_bytes_other_seed_differs() -> None:
    cfg = SyntheticConfig(
        seed=11, duration_s=2.0, crop=24, nuisances=("translation_fast", "illumination", "camera")
    )
    a, b = generate(cfg), generate(cfg)
    assert a.frames.tobytes() == b.frames.tobytes()
    assert a.bvp.tobytes() == b.bvp.tobytes() and a.metadata_json() == b.metadata_json()
    c = generate(
        SyntheticConfig(
            seed=12,
            duration_s=2.0,
            crop=24,
            nuisances=("translation_fast", "illumination", "camera"),
        )
    )
    assert a.frames.tobytes() != c.frames.tobytes()


def test_translation_moves_the_face() -> None:
    video = generate(SyntheticConfig(seed=1, duration_s=4.0, nuisances=("translation_fast",)))
    diff = np.abs(video.frames[0].astype(int) - video.frames[-1].astype(int)).mean()
    assert diff > 2.0


def test_camera_noise_has_the_requested_level() -> None:
    clean = generate(SyntheticConfig(seed=2, duration_s=1.0, crop=32))
    noisy = generate(SyntheticConfig(seed=2, duration_s=1.0, crop=32, nuisances=("camera",)))
    resid = noisy.frames.astype(float) - clean.frames.astype(float)
    assert 0.8 < resid.std() < 3.0  # ~1.5 DN shot noise at mid-grey + 1 DN read noise


def test_heartpy_recordings_are_real_ppg_with_known_hr() -> None:
    raw, fs = load_heartpy_recording(0)
    assert fs == 100.0 and raw.size == 2483
    pulse = heartpy_pulse(0, 20.0)
    assert abs(pulse.mean_hr(0.0, 20.0) - 58.9) < 2.0
    video = generate(SyntheticConfig(seed=0, duration_s=20.0, crop=16, pulse="heartpy:0"))
    assert abs(_fft_hr(video.bvp, 30.0) - 58.9) < 2.5


@pytest.mark.parametrize(
    "kw", [{"nuisances": ("wobble",)}, {"pulse": "heartpy:7"}, {"amplitude": 0.9}, {"crop": 4}]
)
def test_bad_config_is_a_config_error(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SyntheticConfig(**kw)  # type: ignore[arg-type]


def test_face_that_does_not_fit_is_reported() -> None:
    with pytest.raises(ConfigError, match="does not fit"):
        generate(SyntheticConfig(frame_size=(40, 40), face_px=48))
