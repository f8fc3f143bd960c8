"""Heart-rate variability from beat times (torch-free).

Time-domain measures as defined by the Task Force of the ESC and NASPE, "Heart rate variability:
standards of measurement, physiological interpretation and clinical use", Circulation 1996:
SDNN (standard deviation of the inter-beat intervals), RMSSD (root mean square of successive
differences), pNN50 (share of successive differences above 50 ms). Frequency domain: the
Lomb-Scargle periodogram of the unevenly sampled interval series (Laguna, Moody & Mark, "Power
spectral density of unevenly sampled data by least-square analysis", IEEE TBME 1998), LF power in
0.04-0.15 Hz and HF in 0.15-0.4 Hz. Breathing rate is the HF-range peak of the same spectrum
(respiratory sinus arrhythmia; heartpy estimates it from the interval series likewise, van Gent et
al. 2019), reported in breaths per minute. Implausible intervals are dropped first with
:func:`tinyprune.runtime.hr.clean_ibis`; successive differences use adjacent kept intervals only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import scipy.signal
from numpy.typing import ArrayLike

from tinyprune.errors import ConfigError
from tinyprune.runtime.hr import clean_ibis

LF_BAND_HZ = (0.04, 0.15)
HF_BAND_HZ = (0.15, 0.4)
BREATH_BAND_HZ = (0.1, 0.5)  # 6-30 breaths per minute
MIN_SPECTRAL_S = 30.0  # shorter series give no LF/HF (LF needs > 25 s for one cycle)


@dataclass(frozen=True)
class Hrv:
    """HRV summary of one beat series (nan where the series is too short).

    Attributes:
        n_beats: Beats given.
        n_ibi: Plausible inter-beat intervals used.
        ibi_ms: Mean inter-beat interval (ms).
        sdnn_ms: SDNN (ms).
        rmssd_ms: RMSSD (ms).
        pnn50: Share (0-1) of successive differences above 50 ms.
        lf: LF power (s^2, Lomb-Scargle, 0.04-0.15 Hz).
        hf: HF power (s^2, 0.15-0.4 Hz).
        lf_hf: LF / HF.
        breathing_rate: Breaths per minute (the 0.1-0.5 Hz peak of the interval spectrum).
    """

    n_beats: int
    n_ibi: int
    ibi_ms: float
    sdnn_ms: float
    rmssd_ms: float
    pnn50: float
    lf: float
    hf: float
    lf_hf: float
    breathing_rate: float

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-friendly dict (nan becomes None)."""
        items = asdict(self).items()
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in items}


def _successive(ibi: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Differences between adjacent intervals where both are plausible."""
    both = keep[1:] & keep[:-1]
    return np.diff(ibi)[both]


def _band_power(f: np.ndarray, p: np.ndarray, band: tuple[float, float]) -> float:
    m = (f >= band[0]) & (f < band[1])
    return float(np.trapezoid(p[m], f[m])) if m.sum() > 1 else float("nan")


def _spectral(t: np.ndarray, ibi: np.ndarray) -> tuple[float, float, float, float]:
    """LF, HF, LF/HF and breathing rate of intervals ``ibi`` (s) observed at times ``t`` (s)."""
    nan = float("nan")
    if t.size < 8 or t[-1] - t[0] < MIN_SPECTRAL_S:
        return nan, nan, nan, nan
    f = np.linspace(0.01, 0.5, 491)
    y = ibi - ibi.mean()
    pgram = scipy.signal.lombscargle(t, y, 2 * np.pi * f)
    df = float(f[1] - f[0])
    p = pgram * float(np.var(y)) / max(float(pgram.sum()) * df, 1e-300)  # s^2/Hz, sums to var
    lf, hf = _band_power(f, p, LF_BAND_HZ), _band_power(f, p, HF_BAND_HZ)
    br = (f >= BREATH_BAND_HZ[0]) & (f <= BREATH_BAND_HZ[1])
    breathing = float(f[br][np.argmax(p[br])] * 60.0)
    return lf, hf, (lf / hf if hf > 0 else nan), breathing


def hrv_from_beats(beats: ArrayLike) -> Hrv:
    """HRV measures of beat times ``beats`` (seconds, increasing).

    Raises:
        ConfigError: Fewer than 3 beats, non-finite or non-increasing times.
    """
    b = np.asarray(beats, dtype=np.float64).reshape(-1)
    if b.size < 3 or not np.all(np.isfinite(b)) or np.any(np.diff(b) <= 0):
        msg = f"HRV needs >= 3 finite, increasing beat times; got {b.size} values"
        raise ConfigError(msg)
    ibi, keep = clean_ibis(b)
    kept = ibi[keep]
    nan = float("nan")
    if kept.size < 2:
        return Hrv(b.size, int(kept.size), nan, nan, nan, nan, nan, nan, nan, nan)
    sd = _successive(ibi, keep)
    rmssd = float(np.sqrt(np.mean(sd**2)) * 1000) if sd.size else nan
    pnn50 = float(np.mean(np.abs(sd) > 0.05)) if sd.size else nan
    lf, hf, lf_hf, breathing = _spectral(b[1:][keep], kept)
    return Hrv(
        n_beats=int(b.size),
        n_ibi=int(kept.size),
        ibi_ms=float(kept.mean() * 1000),
        sdnn_ms=float(np.std(kept, ddof=1) * 1000),
        rmssd_ms=rmssd,
        pnn50=pnn50,
        lf=lf,
        hf=hf,
        lf_hf=lf_hf,
        breathing_rate=breathing,
    )
