"""Heart rate from a blood-volume-pulse (BVP) waveform, robust to the second harmonic.

Pre-processing follows rPPG-Toolbox's ``post_process.py`` (Liu et al., "rPPG-Toolbox: Deep Remote
PPG Toolbox", NeurIPS 2023 Datasets and Benchmarks): integrate a first-difference signal, detrend
with the smoothness-priors method (Tarvainen et al., "An advanced detrending method with application
to HRV analysis", IEEE TBME 2002; lambda 100), 1st-order Butterworth band-pass with ``filtfilt``.

The toolbox then takes the periodogram peak. On real contact PPG that peak can sit on the second
harmonic (a pronounced dicrotic notch; first differences double the harmonic's weight), so
:func:`estimate_hr` also weighs the sub-harmonic of the peak: it is the heart rate when it carries a
real share of the peak's power and the harmonic pair (f0, 2 f0) holds more of the band's power than
(f, 2 f) does. The signal-quality index (SQI) is that spectral SNR in dB (de Haan & Jeanne 2013's
template SNR, as the toolbox computes it). Beats are then found with ``scipy.signal.find_peaks`` at
least 0.6 of the chosen period apart; when their rate agrees with the spectrum the beat-derived rate
is reported (it is not limited by the spectral resolution), otherwise the spectral one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.signal
import scipy.sparse
import scipy.sparse.linalg
from numpy.typing import ArrayLike, NDArray

from tinyprune.errors import ConfigError

Array = NDArray[np.float64]
HARMONIC_TOL_HZ = 0.1  # the toolbox's SNR window half-width
SUBHARMONIC_MIN_SHARE = 0.2  # sub-harmonic power / peak power needed to consider it
PEAK_AGREEMENT = 0.15  # beat rate within 15 % of the spectral rate -> report the beat rate
METHODS = ("auto", "fft", "peak")
IBI_MAX_DEV = 0.3  # an inter-beat interval further than this from the median is an artefact
IBI_MAX_DEV_S = 0.3  # ... unless it is within this many seconds (heartpy's rule, on the median)
LAMBDA_FS = 30.0  # the detrending lambda is given for this rate and scaled with fs


@dataclass(frozen=True)
class HrEstimate:
    """One heart-rate reading.

    Attributes:
        bpm: The reported heart rate (beats per minute).
        sqi: Signal-quality index: spectral SNR (dB) of the fundamental and its harmonic.
        method: How ``bpm`` was chosen: ``fft``, ``fft-subharmonic``, ``peak``.
        fft_bpm: Spectral estimate after the sub-harmonic check.
        peak_bpm: Beat-derived estimate (nan when fewer than 3 beats were found).
    """

    bpm: float
    sqi: float
    method: str
    fft_bpm: float
    peak_bpm: float


def as_signal(x: ArrayLike, what: str = "BVP", min_len: int = 8) -> Array:
    """A finite 1-D float64 copy of ``x``, or a ConfigError naming the problem."""
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size < min_len or not np.all(np.isfinite(a)):
        msg = f"{what} must be a finite 1-D signal of >= {min_len} samples; got {a.size} samples"
        raise ConfigError(msg)
    return a


def check_band(low_hz: float, high_hz: float, fs: float) -> None:
    """Raise ConfigError unless ``0 < low_hz < high_hz < fs / 2``."""
    if not fs > 0 or not 0 < low_hz < high_hz < fs / 2:
        msg = (
            f"band ({low_hz}, {high_hz}) Hz with fs={fs} Hz is invalid; "
            "expected 0 < low < high < fs/2 (lower the band or raise the frame rate)"
        )
        raise ConfigError(msg)


def detrend(signal: ArrayLike, lam: float = 100.0) -> Array:
    """Smoothness-priors detrending (Tarvainen et al. 2002): ``z - (I + lam^2 D2'D2)^-1 z``."""
    z = as_signal(signal, "signal", 3)
    n = z.size
    d2 = scipy.sparse.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(n - 2, n))
    a = scipy.sparse.identity(n) + lam**2 * (d2.T @ d2)
    return z - scipy.sparse.linalg.spsolve(a.tocsc(), z)


def preprocess(
    bvp: ArrayLike,
    fs: float,
    *,
    low_hz: float = 0.7,
    high_hz: float = 3.0,
    diff: bool = False,
    detrend_lambda: float = 100.0,
    order: int = 1,
) -> Array:
    """rPPG-Toolbox post-processing: cumsum (if ``diff``), detrend, Butterworth band-pass.

    The detrending filter's cut-off is ``fs / (2 pi sqrt(lambda))`` (0.48 Hz for lambda 100 at
    30 fps, the toolbox's setting); ``detrend_lambda`` is meant at 30 Hz and scaled by ``fs / 30``
    so the cut-off stays put at other rates (unscaled, 100 Hz contact PPG loses its fundamental).
    """
    x = as_signal(bvp)
    check_band(low_hz, high_hz, fs)
    if diff:
        x = np.cumsum(x)
    x = detrend(x, detrend_lambda * max(fs, 1.0) / LAMBDA_FS)
    b, a = scipy.signal.butter(order, [low_hz, high_hz], btype="bandpass", fs=fs)
    return scipy.signal.filtfilt(b, a, x)


def spectrum(x: Array, fs: float, resolution_bpm: float = 0.1) -> tuple[Array, Array]:
    """Periodogram zero-padded to a bin width of at most ``resolution_bpm``."""
    nfft = max(x.size, int(np.ceil(fs * 60.0 / resolution_bpm)))
    nfft = 1 << (nfft - 1).bit_length()
    return scipy.signal.periodogram(x, fs=fs, nfft=nfft, detrend=False)


def _power_near(f: Array, p: Array, hz: float, tol: float = HARMONIC_TOL_HZ) -> float:
    near = np.abs(f - hz) <= tol
    return float(p[near].max()) if near.any() else 0.0


def harmonic_snr_db(
    f: Array, p: Array, f0: float, low_hz: float, high_hz: float, tol: float = HARMONIC_TOL_HZ
) -> float:
    """SNR (dB): power within ``tol`` of f0 and 2 f0 over the rest of the band's power."""
    harm = (np.abs(f - f0) <= tol) | (np.abs(f - 2 * f0) <= tol)
    rest = (f >= low_hz) & (f <= high_hz) & ~harm
    tiny = np.finfo(np.float64).tiny
    return float(10 * np.log10(max(p[harm].sum(), tiny) / max(p[rest].sum(), tiny)))


def fundamental_hz(f: Array, p: Array, low_hz: float, high_hz: float) -> tuple[float, bool]:
    """Spectral fundamental (Hz) in the band and whether the sub-harmonic check moved it."""
    band = (f >= low_hz) & (f <= high_hz)
    if not band.any() or not np.any(p[band] > 0):
        msg = f"no spectral power in {low_hz}-{high_hz} Hz; the signal is flat or too short"
        raise ConfigError(msg)
    peak = float(f[band][np.argmax(p[band])])
    half = peak / 2
    if half < low_hz:
        return peak, False
    sub = (np.abs(f - half) <= HARMONIC_TOL_HZ) & band
    if not sub.any():
        return peak, False
    half = float(f[sub][np.argmax(p[sub])])
    share = _power_near(f, p, half, tol=0.02) / max(_power_near(f, p, peak, tol=0.02), 1e-300)
    better = harmonic_snr_db(f, p, half, low_hz, high_hz) > harmonic_snr_db(
        f, p, peak, low_hz, high_hz
    )
    if share >= SUBHARMONIC_MIN_SHARE and better:
        return half, True
    return peak, False


def detect_beats(x: ArrayLike, fs: float, hr_bpm: float) -> Array:
    """Beat times (s) of a filtered BVP: maxima at least 0.6 of the period ``60 / hr_bpm`` apart.

    The minimum distance keeps a dicrotic wave from counting as a beat; a prominence floor of a
    quarter of the signal's standard deviation drops ripples.
    """
    s = as_signal(x)
    if not hr_bpm > 0:
        msg = f"detect_beats needs a positive heart rate, got {hr_bpm!r}"
        raise ConfigError(msg)
    distance = max(1, int(0.6 * fs * 60.0 / hr_bpm))
    peaks, _ = scipy.signal.find_peaks(s, distance=distance, prominence=0.25 * float(np.std(s)))
    return _refine(s, peaks) / fs


def _refine(s: Array, peaks: NDArray[np.intp]) -> Array:
    """Sub-sample peak positions by parabolic interpolation of the three samples around each."""
    k = peaks[(peaks > 0) & (peaks < s.size - 1)]
    y0, y1, y2 = s[k - 1], s[k], s[k + 1]
    den = y0 - 2 * y1 + y2
    shift = np.where(np.abs(den) > 1e-12, 0.5 * (y0 - y2) / np.where(den == 0, 1, den), 0.0)
    return k + np.clip(shift, -0.5, 0.5)


def clean_ibis(beats: ArrayLike, max_dev: float = IBI_MAX_DEV) -> tuple[Array, Array]:
    """Inter-beat intervals (s) and a mask of the plausible ones.

    An interval is kept when it lies within ``max(max_dev * median, 0.3 s)`` of the median
    interval, heartpy's artefact rule (van Gent et al., "HeartPy", 2019) taken around the median:
    a missed or an extra beat moves an interval by far more than sinus arrhythmia does.
    """
    b = np.asarray(beats, dtype=np.float64).reshape(-1)
    ibi = np.diff(b)
    if ibi.size == 0:
        return ibi, np.zeros(0, dtype=bool)
    med = float(np.median(ibi))
    return ibi, np.abs(ibi - med) <= max(max_dev * med, IBI_MAX_DEV_S)


def beat_rate_bpm(beats: ArrayLike) -> float:
    """Mean beat rate: 60 / the mean plausible inter-beat interval (nan with < 2 of them)."""
    ibi, keep = clean_ibis(beats)
    if keep.sum() < 2:
        return float("nan")
    return float(60.0 / ibi[keep].mean())


def estimate_hr(
    bvp: ArrayLike,
    fs: float,
    *,
    low_hz: float = 0.7,
    high_hz: float = 3.0,
    diff: bool = False,
    detrend_lambda: float = 100.0,
    method: str = "auto",
) -> HrEstimate:
    """Heart rate of a BVP waveform (predicted rPPG or a contact-PPG label).

    Args:
        bvp: The waveform, 1-D, at ``fs`` samples per second (at least ~3 beats long).
        fs: Sampling rate in Hz.
        low_hz: Lower edge of the pass band and of the HR search (0.7 Hz = 42 bpm).
        high_hz: Upper edge (3.0 Hz = 180 bpm).
        diff: ``bvp`` is a first difference (DiffNormalized labels/predictions): integrate first.
        detrend_lambda: Smoothness-priors lambda (the toolbox uses 100).
        method: ``auto`` (beat rate when it agrees with the spectrum, else spectral), ``fft``
            (spectral with the sub-harmonic check) or ``peak`` (beat rate, spectral if < 3 beats).

    Returns:
        The reading with both estimates and the SQI.

    Raises:
        ConfigError: Bad method or band, a non-finite or too short signal, a flat spectrum.
    """
    if method not in METHODS:
        msg = f"HR method {method!r} is not one of: {', '.join(METHODS)}"
        raise ConfigError(msg)
    x = preprocess(
        bvp, fs, low_hz=low_hz, high_hz=high_hz, diff=diff, detrend_lambda=detrend_lambda
    )
    f, p = spectrum(x, fs)
    f0, moved = fundamental_hz(f, p, low_hz, high_hz)
    fft_bpm = 60.0 * f0
    sqi = harmonic_snr_db(f, p, f0, low_hz, high_hz)
    peak_bpm = beat_rate_bpm(detect_beats(x, fs, fft_bpm))
    spectral = "fft-subharmonic" if moved else "fft"
    agree = np.isfinite(peak_bpm) and abs(peak_bpm - fft_bpm) <= PEAK_AGREEMENT * fft_bpm
    if method == "peak" and np.isfinite(peak_bpm) or method == "auto" and agree:
        return HrEstimate(peak_bpm, sqi, "peak", fft_bpm, peak_bpm)
    return HrEstimate(fft_bpm, sqi, spectral, fft_bpm, peak_bpm)
