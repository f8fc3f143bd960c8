"""Metric tests against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tinyprune.errors import ConfigError
from tinyprune.metrics import (
    bandpass,
    detrend,
    hr_errors,
    hr_fft,
    hr_from_bvp,
    hr_peaks,
    mae,
    mape,
    neg_pearson_loss,
    next_pow2,
    pearson,
    rmse,
    snr_db,
    top1_accuracy,
)

FS = 30.0


def _sine(bpm: float, seconds: float = 20.0, fs: float = FS, phase: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * fs)) / fs
    return np.sin(2 * np.pi * bpm / 60.0 * t + phase)


def test_next_pow2():
    assert [next_pow2(n) for n in (1, 2, 3, 600, 1024, 1025)] == [1, 2, 4, 1024, 1024, 2048]


@pytest.mark.parametrize("bpm", [48.0, 72.0, 110.0])
def test_hr_fft_of_sinusoid_within_half_bin(bpm):
    x = _sine(bpm)
    half_bin_bpm = FS / next_pow2(x.size) * 60 / 2
    assert abs(hr_fft(x, FS) - bpm) <= half_bin_bpm
    assert abs(hr_from_bvp(x, FS) - bpm) <= half_bin_bpm


def test_hr_from_diff_signal_integrates_first():
    x = _sine(72.0) + 0.02 * np.arange(600) / 600  # slow drift
    d = np.diff(x, prepend=x[0])
    assert abs(hr_from_bvp(d, FS, diff=True) - 72.0) <= FS / 1024 * 60 / 2


def test_hr_band_excludes_out_of_band_peak():
    x = _sine(72.0) + 3.0 * _sine(20.0)  # 20 bpm is below the 36 bpm band edge
    assert abs(hr_fft(x, FS) - 72.0) < 1.0


def test_hr_peaks_of_sinusoid_and_dicrotic_suppression():
    t = np.arange(600) / FS
    f = 1.2  # 72 bpm
    beat = np.sin(2 * np.pi * f * t) + 0.6 * np.sin(2 * np.pi * 2 * f * t + 1.0)  # notch peaks
    assert hr_peaks(np.sin(2 * np.pi * f * t), FS) == pytest.approx(72.0, abs=0.5)
    assert hr_peaks(beat, FS, max_bpm=90.0) == pytest.approx(72.0, abs=0.5)
    assert hr_from_bvp(np.sin(2 * np.pi * f * t), FS, method="peak") == pytest.approx(72, abs=1)
    with pytest.raises(ConfigError, match="peaks"):
        hr_peaks(np.zeros(50), FS)


def test_detrend_removes_linear_trend_and_keeps_fast_oscillation():
    n = 300
    trend = np.linspace(0, 5, n)
    osc = _sine(90.0, seconds=n / FS)
    out = detrend(trend + osc, lam=100)
    assert np.abs(detrend(trend)).max() < 1e-6  # a straight line lies in the null space of D2
    assert np.corrcoef(out, osc)[0, 1] > 0.99


def test_bandpass_attenuates_out_of_band():
    inband, low = _sine(72.0), _sine(6.0)  # 6 bpm = 0.1 Hz, below 0.6 Hz
    assert np.std(bandpass(inband, FS)) > 0.8 * np.std(inband)
    assert np.std(bandpass(low, FS)) < 0.3 * np.std(low)
    with pytest.raises(ConfigError, match="band"):
        bandpass(inband, FS, band=(3.0, 20.0))


def test_snr_clean_sinusoid_high_noise_low():
    rng = np.random.default_rng(0)
    clean = _sine(72.0)
    noise = rng.standard_normal(clean.size)
    assert snr_db(clean, 72.0, FS) > 10.0  # leakage of the zero-padded periodogram caps it
    assert snr_db(noise, 72.0, FS) < -5.0
    on_bin = _sine(75.0, seconds=32.0, fs=32.0)  # 40 whole cycles, N = nfft = 1024: no leakage
    assert snr_db(on_bin, 75.0, 32.0) > 60.0
    assert snr_db(clean + noise, 72.0, FS) < snr_db(clean, 72.0, FS)


def test_error_metrics_hand_values():
    pred, gt = [70.0, 80.0, 90.0, 100.0], [72.0, 78.0, 95.0, 100.0]
    # errors: -2, 2, -5, 0
    assert mae(pred, gt) == pytest.approx(9 / 4)
    assert rmse(pred, gt) == pytest.approx(math.sqrt(33 / 4))
    assert mape(pred, gt) == pytest.approx(100 / 4 * (2 / 72 + 2 / 78 + 5 / 95))
    assert pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [8, 6, 4, 2]) == pytest.approx(-1.0)
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    s = hr_errors(pred, gt)
    assert s.n == 4 and s.mae == pytest.approx(2.25)
    assert s.mae_se == pytest.approx(np.std([2, 2, 5, 0]) / 2)
    r = pearson(pred, gt)
    assert s.pearson_se == pytest.approx(math.sqrt((1 - r**2) / 2))
    with pytest.raises(ConfigError, match="differ in length"):
        mae([1, 2], [1, 2, 3])


def test_top1_accuracy():
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert top1_accuracy(logits, torch.tensor([1, 0, 0, 1])) == pytest.approx(0.5)
    assert top1_accuracy(logits.numpy(), [1, 0, 1, 0]) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="logits"):
        top1_accuracy(logits, [1, 0])


def test_neg_pearson_loss():
    t = torch.linspace(0, 6.28, 50)
    y = torch.stack([torch.sin(t), torch.cos(t)])
    assert neg_pearson_loss(3 * y + 1, y).item() == pytest.approx(0.0, abs=1e-6)
    assert neg_pearson_loss(-y, y).item() == pytest.approx(2.0, abs=1e-6)
    mixed = torch.stack([y[0], -y[1]])
    assert neg_pearson_loss(mixed, y).item() == pytest.approx(1.0, abs=1e-6)  # mean of 0 and 2
    pred = torch.randn(2, 50, requires_grad=True)
    neg_pearson_loss(pred, y).backward()
    assert torch.isfinite(pred.grad).all()
    with pytest.raises(ConfigError, match="same shape"):
        neg_pearson_loss(y, y[:, :10])


def test_video_hr_concatenates_each_videos_clips() -> None:
    from tinyprune.metrics import video_hr

    fs, clip = 30.0, 64
    t = np.arange(8 * clip) / fs
    waves = [np.sin(2 * np.pi * bpm / 60 * t).reshape(8, clip) for bpm in (66.0, 96.0)]
    bvp = np.concatenate(waves)  # 8 clips of video 0, then 8 of video 1
    video = np.repeat([0, 1], 8)
    true = np.repeat([66.0, 96.0], 8)
    pred, gt = video_hr(bvp, video, true, fs, diff=False)
    np.testing.assert_allclose(gt, [66.0, 96.0])
    np.testing.assert_allclose(pred, [66.0, 96.0], atol=2.0)  # one FFT bin of a 17 s video
    with pytest.raises(ConfigError, match="video ids"):
        video_hr(bvp, video[:-1], true, fs)
