"""Evaluation metrics: top-1 accuracy, heart rate from a BVP waveform, HR errors, SNR.

The rPPG part follows rPPG-Toolbox's evaluation (docs/methods.md §9) so that numbers compare with
the published tables: integrate a first-difference signal (optional), detrend with the
smoothness-priors method (lambda 100), 1st-order Butterworth band-pass with ``filtfilt``,
then the HR is the periodogram peak in the band (nfft = next power of two) or 60 / the mean
peak-to-peak interval. The label HR is computed the same way from the label waveform.
``neg_pearson_loss`` is the training loss of PhysNet-style nets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.signal
import scipy.sparse
import scipy.sparse.linalg
import torch
from numpy.typing import ArrayLike, NDArray

from tinyprune.errors import ConfigError

DEFAULT_BAND_HZ = (0.6, 3.3)  # 36-198 bpm, the toolbox default
Array = NDArray[np.float64]


def _as_1d(x: ArrayLike, what: str, min_len: int = 2) -> Array:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size < min_len or not np.all(np.isfinite(a)):
        msg = f"{what} must be a finite 1-D signal of >= {min_len} samples; got {a.size} samples"
        raise ConfigError(msg)
    return a


def _check_band(band: tuple[float, float], fs: float) -> None:
    low, high = band
    if fs <= 0 or not 0 < low < high < fs / 2:
        msg = f"band {band} Hz with fs={fs} Hz is invalid; expected 0 < low < high < fs/2"
        raise ConfigError(msg)


def next_pow2(n: int) -> int:
    """Smallest power of two >= ``n`` (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def detrend(signal: ArrayLike, lam: float = 100.0) -> Array:
    """Smoothness-priors detrending (Tarvainen et al., 2002): ``z - (I + lam^2 D2'D2)^-1 z``."""
    z = _as_1d(signal, "signal", 3)
    n = z.size
    d2 = scipy.sparse.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(n - 2, n))
    a = scipy.sparse.identity(n) + lam**2 * (d2.T @ d2)
    return z - scipy.sparse.linalg.spsolve(a.tocsc(), z)


def bandpass(
    signal: ArrayLike, fs: float, band: tuple[float, float] = DEFAULT_BAND_HZ, order: int = 1
) -> Array:
    """Zero-phase Butterworth band-pass (``filtfilt``), 1st order by default."""
    x = _as_1d(signal, "signal", 8)
    _check_band(band, fs)
    b, a = scipy.signal.butter(order, [band[0] / fs * 2, band[1] / fs * 2], btype="bandpass")
    return scipy.signal.filtfilt(b, a, x)


def preprocess_bvp(
    bvp: ArrayLike,
    fs: float,
    *,
    diff: bool = False,
    detrend_lambda: float = 100.0,
    band: tuple[float, float] | None = DEFAULT_BAND_HZ,
) -> Array:
    """Steps 1-3 of §9.1: cumsum (if ``diff``), detrend, band-pass (skipped if band is None)."""
    x = _as_1d(bvp, "BVP", 8)
    if diff:
        x = np.cumsum(x)
    x = detrend(x, detrend_lambda)
    return bandpass(x, fs, band) if band is not None else x


def _periodogram(x: Array, fs: float) -> tuple[Array, Array]:
    return scipy.signal.periodogram(x, fs=fs, nfft=next_pow2(x.size), detrend=False)


def hr_fft(signal: ArrayLike, fs: float, band: tuple[float, float] = DEFAULT_BAND_HZ) -> float:
    """HR (bpm) at the periodogram peak inside ``band`` (nfft = next power of two)."""
    x = _as_1d(signal, "signal", 8)
    _check_band(band, fs)
    f, p = _periodogram(x, fs)
    mask = (f >= band[0]) & (f <= band[1])
    if not mask.any():
        msg = (
            f"no periodogram bin in band {band} Hz for {x.size} samples at {fs} Hz; "
            "use a longer signal"
        )
        raise ConfigError(msg)
    return float(f[mask][np.argmax(p[mask])] * 60.0)


def hr_peaks(signal: ArrayLike, fs: float, max_bpm: float = 200.0) -> float:
    """HR (bpm) = 60 / mean inter-peak interval; peaks at least ``fs*60/max_bpm`` apart."""
    x = _as_1d(signal, "signal", 8)
    peaks, _ = scipy.signal.find_peaks(x, distance=max(1.0, fs * 60.0 / max_bpm))
    if peaks.size < 2:
        msg = f"found {peaks.size} peaks in {x.size} samples; need >= 2 for a peak-based HR"
        raise ConfigError(msg)
    return float(60.0 / np.mean(np.diff(peaks) / fs))


def hr_from_bvp(
    bvp: ArrayLike,
    fs: float,
    *,
    method: str = "fft",
    diff: bool = False,
    band: tuple[float, float] = DEFAULT_BAND_HZ,
    detrend_lambda: float = 100.0,
) -> float:
    """Heart rate (bpm) of a BVP waveform, rPPG-Toolbox style (docs/methods.md §9.1).

    Args:
        bvp: Predicted or label waveform, 1-D.
        fs: Sampling rate (frames per second).
        method: ``"fft"`` (periodogram peak) or ``"peak"`` (peak detection).
        diff: True if ``bvp`` is a first difference (DiffNormalized); it is integrated first.
        band: Pass band and HR search band in Hz.
        detrend_lambda: Smoothness-priors lambda.

    Raises:
        ConfigError: Bad method, band, or a signal too short.
    """
    if method not in ("fft", "peak"):
        msg = f"HR method {method!r} is not one of: fft, peak"
        raise ConfigError(msg)
    x = preprocess_bvp(bvp, fs, diff=diff, detrend_lambda=detrend_lambda, band=band)
    return hr_fft(x, fs, band) if method == "fft" else hr_peaks(x, fs)


def video_hr(
    bvp: ArrayLike, video: ArrayLike, true_hr: ArrayLike, fs: float, *, diff: bool = True
) -> tuple[Array, Array]:
    """Predicted and true HR (bpm) per video, as the rPPG toolbox evaluates a test set.

    The predicted clips of a video (rows of ``bvp``, in order) are concatenated and
    :func:`hr_from_bvp` is taken on the whole; the true HR is the mean of the clips' labels.
    A short clip alone is too short for an FFT heart rate (2 s gives ~28 bpm bins).

    Args:
        bvp: Predicted waveforms, one row per clip.
        video: Video id of each clip.
        true_hr: True HR (bpm) of each clip.
        fs: Sampling rate (frames per second).
        diff: The predictions are first differences (DiffNormalized labels).
    """
    x, vid, hr = np.asarray(bvp), np.asarray(video), np.asarray(true_hr, dtype=np.float64)
    if not len(x) == len(vid) == len(hr):
        msg = f"got {len(x)} predicted clips, {len(vid)} video ids and {len(hr)} true HRs"
        raise ConfigError(msg)
    ids = np.unique(vid)
    pred = [hr_from_bvp(x[vid == v].reshape(-1), fs, diff=diff) for v in ids]
    return np.array(pred), np.array([hr[vid == v].mean() for v in ids])


def video_table(
    bvp: ArrayLike,
    video: ArrayLike,
    true_hr: ArrayLike,
    fs: float,
    *,
    diff: bool = True,
    labels: ArrayLike | None = None,
    device_hr: ArrayLike | None = None,
    names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Per-video HR table, as rPPG-Toolbox evaluates a test set, with the device HR beside it.

    Per video: ``pred_hr`` from the concatenated predicted clips through
    :func:`tinyprune.runtime.hr.estimate_hr` (toolbox detrend/band-pass, sub-harmonic check,
    beat rate) with its ``sqi`` and ``method``; ``label_hr`` from the concatenated label clips
    through the same call when ``labels`` is given, else the mean of ``true_hr`` (the loaders
    store the whole-video label HR in every clip); ``device_hr`` (None when absent); ``ref_hr``
    (the device HR when present, else the label HR) and ``snr_db`` of the prediction at it.

    Args:
        bvp: Predicted waveforms, one row per clip, clips of a video in order.
        video: Video index of each clip.
        true_hr: Ground-truth HR of each clip (``ClipDataset.hr_bpm``).
        fs: Frame rate.
        diff: Predictions and labels are first differences (DiffNormalized).
        labels: Label waveforms, one row per clip (optional).
        device_hr: Device HR of each clip (``ClipDataset.device_hr``; nan = none).
        names: Name of each video index (``ClipDataset.video_names``).
    """
    from tinyprune.runtime.hr import estimate_hr

    x, vid = np.asarray(bvp, np.float64), np.asarray(video)
    hr = np.asarray(true_hr, np.float64)
    dev = np.full(len(x), np.nan) if device_hr is None else np.asarray(device_hr, np.float64)
    lab = None if labels is None else np.asarray(labels, np.float64)
    if not len(x) == len(vid) == len(hr) == len(dev) or (lab is not None and len(lab) != len(x)):
        msg = (
            f"got {len(x)} predicted clips but {len(vid)} video ids, {len(hr)} HRs, "
            f"{len(dev)} device HRs (and labels for each clip, if given)"
        )
        raise ConfigError(msg)
    rows = []
    for v in np.unique(vid):
        sel = vid == v
        est = estimate_hr(x[sel].reshape(-1), fs, diff=diff)
        lab_hr = (
            hr[sel].mean() if lab is None else estimate_hr(lab[sel].reshape(-1), fs, diff=diff).bpm
        )
        dev_hr = float(np.nanmean(dev[sel])) if np.isfinite(dev[sel]).any() else None
        ref = dev_hr if dev_hr is not None else float(lab_hr)
        wave = preprocess_bvp(x[sel].reshape(-1), fs, diff=diff)
        rows.append(
            {
                "video": names[int(v)] if names is not None else str(v),
                "pred_hr": float(est.bpm),
                "label_hr": float(lab_hr),
                "device_hr": dev_hr,
                "ref_hr": ref,
                "sqi": float(est.sqi),
                "method": est.method,
                "snr_db": snr_db(wave, ref, fs),
            }
        )
    return rows


def video_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """MAE, RMSE, MAPE, Pearson (with SEs) and mean SNR of a :func:`video_table`.

    The reference is the device HR when every video has one, else the label HR; ``reference``
    says which. ``label_vs_device_mae`` tells how far the label HR is from the device's.
    """
    if not rows:
        msg = "no videos to evaluate; the test split is empty"
        raise ConfigError(msg)
    pred = np.array([r["pred_hr"] for r in rows])
    has_dev = all(r["device_hr"] is not None for r in rows)
    ref = np.array([r["device_hr"] if has_dev else r["label_hr"] for r in rows], np.float64)
    out: dict[str, Any] = {"n_videos": len(rows), "reference": "device" if has_dev else "label"}
    out.update({"mae": mae(pred, ref), "rmse": rmse(pred, ref), "mape": mape(pred, ref)})
    if len(rows) >= 3:
        e = hr_errors(pred, ref)
        out.update({"mae_se": e.mae_se, "pearson": e.pearson, "pearson_se": e.pearson_se})
    out["snr_db"] = float(np.mean([r["snr_db"] for r in rows]))
    if has_dev:
        out["label_vs_device_mae"] = mae([r["label_hr"] for r in rows], ref)
    return out


def snr_db(
    bvp: ArrayLike,
    hr_gt: float,
    fs: float,
    band: tuple[float, float] = DEFAULT_BAND_HZ,
    tol_hz: float = 0.1,
) -> float:
    """SNR (dB) of a waveform around the true HR (docs/methods.md §9.3).

    Signal = periodogram power within ``f0 +- tol_hz`` and ``2 f0 +- tol_hz`` (f0 = HR/60);
    noise = the remaining power inside ``band``.
    """
    x = _as_1d(bvp, "BVP", 8)
    _check_band(band, fs)
    f, p = _periodogram(x, fs)
    f0 = hr_gt / 60.0
    harm = (np.abs(f - f0) <= tol_hz) | (np.abs(f - 2 * f0) <= tol_hz)
    rest = (f >= band[0]) & (f <= band[1]) & ~harm
    signal, noise = float(p[harm].sum()), float(p[rest].sum())
    tiny = np.finfo(np.float64).tiny
    return float(10.0 * np.log10(max(signal, tiny) / max(noise, tiny)))


def _pair(pred: ArrayLike, gt: ArrayLike, min_len: int = 1) -> tuple[Array, Array]:
    p, g = _as_1d(pred, "pred", min_len), _as_1d(gt, "gt", min_len)
    if p.shape != g.shape:
        msg = f"pred and gt differ in length: {p.size} vs {g.size}"
        raise ConfigError(msg)
    return p, g


def mae(pred: ArrayLike, gt: ArrayLike) -> float:
    """Mean absolute error."""
    p, g = _pair(pred, gt)
    return float(np.mean(np.abs(p - g)))


def rmse(pred: ArrayLike, gt: ArrayLike) -> float:
    """Root mean squared error."""
    p, g = _pair(pred, gt)
    return float(np.sqrt(np.mean((p - g) ** 2)))


def mape(pred: ArrayLike, gt: ArrayLike) -> float:
    """Mean absolute percentage error, in percent (``gt`` must be non-zero)."""
    p, g = _pair(pred, gt)
    if np.any(g == 0):
        msg = "MAPE needs non-zero ground truth values"
        raise ConfigError(msg)
    return float(100.0 * np.mean(np.abs(p - g) / np.abs(g)))


def pearson(pred: ArrayLike, gt: ArrayLike) -> float:
    """Pearson correlation coefficient (nan if either input is constant)."""
    p, g = _pair(pred, gt, 2)
    pc, gc = p - p.mean(), g - g.mean()
    den = math.sqrt(float(pc @ pc) * float(gc @ gc))
    return float(pc @ gc / den) if den > 0 else float("nan")


@dataclass(frozen=True)
class HRErrors:
    """HR error summary across videos/windows, with standard errors (rPPG-Toolbox style)."""

    n: int
    mae: float
    mae_se: float
    rmse: float
    rmse_se: float
    mape: float
    mape_se: float
    pearson: float
    pearson_se: float


def hr_errors(pred: ArrayLike, gt: ArrayLike) -> HRErrors:
    """MAE, RMSE, MAPE, Pearson and their standard errors (docs/methods.md §9.2).

    SEs: ``std(|e|)/sqrt(n)`` (MAE), ``std(100|e|/gt)/sqrt(n)`` (MAPE),
    ``sqrt((1-r^2)/(n-2))`` (Pearson, nan for n < 3), and for RMSE the delta method
    ``std(e^2)/sqrt(n) / (2 RMSE)``.
    """
    p, g = _pair(pred, gt, 2)
    e = p - g
    n = e.size
    r, r_mse = pearson(p, g), rmse(p, g)
    se_mse = float(np.std(e**2) / math.sqrt(n))
    return HRErrors(
        n=n,
        mae=mae(p, g),
        mae_se=float(np.std(np.abs(e)) / math.sqrt(n)),
        rmse=r_mse,
        rmse_se=se_mse / (2 * r_mse) if r_mse > 0 else 0.0,
        mape=mape(p, g),
        mape_se=float(np.std(100 * np.abs(e) / np.abs(g)) / math.sqrt(n)),
        pearson=r,
        pearson_se=math.sqrt((1 - r**2) / (n - 2)) if n > 2 else float("nan"),
    )


def top1_accuracy(logits: torch.Tensor | ArrayLike, labels: torch.Tensor | ArrayLike) -> float:
    """Fraction of rows whose arg-max equals the label."""
    lg = torch.as_tensor(logits)
    lb = torch.as_tensor(labels).reshape(-1)
    if lg.dim() != 2 or lg.shape[0] != lb.shape[0] or lb.numel() == 0:
        msg = (
            f"top1_accuracy expects logits (N, classes) and labels (N,), N > 0; "
            f"got {tuple(lg.shape)} and {tuple(lb.shape)}"
        )
        raise ConfigError(msg)
    return float((lg.argmax(dim=1) == lb.to(lg.device)).float().mean())


def neg_pearson_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Negative Pearson loss ``1 - r`` per clip (rows of ``(B, T)``), averaged over the batch."""
    if pred.shape != target.shape or pred.dim() != 2:
        msg = (
            f"neg_pearson_loss expects pred and target of the same shape (B, T); "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
        raise ConfigError(msg)
    x = pred - pred.mean(dim=1, keepdim=True)
    y = target - target.mean(dim=1, keepdim=True)
    r = (x * y).sum(dim=1) / torch.sqrt((x * x).sum(dim=1) * (y * y).sum(dim=1) + eps)
    return (1.0 - r).mean()
