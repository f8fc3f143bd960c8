"""Unsupervised rPPG: GREEN, CHROM and POS from a skin-colour trace (torch-free).

Each method maps the mean RGB of the face region per frame, an array ``(T, 3)``, to a BVP estimate
of length ``T``; :func:`tinyprune.runtime.hr.estimate_hr` then reads the heart rate. The methods are
re-implemented from the papers, with the window lengths rPPG-Toolbox uses:

* GREEN: Verkruysse, Svaasand & Nelson, "Remote plethysmographic imaging using ambient light",
  Optics Express 2008: the green channel, mean removed.
* CHROM: de Haan & Jeanne, "Robust pulse rate from chrominance-based rPPG", IEEE TBME 2013:
  per 1.6 s window, the normalised channels give ``X = 3R - 2G`` and ``Y = 1.5R + G - 1.5B``,
  both band-passed; ``S = X - (std X / std Y) Y``, Hann-windowed, overlap-added (half-window hop).
* POS: Wang, den Brinker, Stuijk & de Haan, "Algorithmic principles of remote PPG", IEEE TBME 2017:
  per 1.6 s window (sliding by one frame), temporal normalisation ``C / mean(C)``, projection onto
  the plane orthogonal to the skin tone ``S = [[0, 1, -1], [-2, 1, 1]] C_n``,
  ``h = S1 + (std S1 / std S2) S2``, mean-removed and overlap-added.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.signal
from numpy.typing import ArrayLike, NDArray

from tinyprune.errors import ConfigError

Array = NDArray[np.float64]
WINDOW_S = 1.6
CHROM_BAND_HZ = (0.7, 2.5)  # de Haan & Jeanne's band-pass (rPPG-Toolbox: 0.7-2.5 Hz, order 3)
POS_PROJECTION = np.array([[0.0, 1.0, -1.0], [-2.0, 1.0, 1.0]])
_EPS = 1e-12


def as_rgb_trace(rgb: ArrayLike, fs: float, min_s: float = WINDOW_S) -> Array:
    """Validate a per-frame mean colour trace: finite, positive, shape ``(T, 3)``, >= ``min_s``."""
    x = np.asarray(rgb, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        msg = f"an RGB trace must have shape (frames, 3); got {x.shape}"
        raise ConfigError(msg)
    if not fs > 0:
        msg = f"frame rate must be > 0, got {fs!r}"
        raise ConfigError(msg)
    need = int(np.ceil(min_s * fs)) + 1
    if x.shape[0] < need or not np.all(np.isfinite(x)):
        msg = (
            f"an RGB trace needs >= {need} finite frames ({min_s} s at {fs} fps); got {x.shape[0]}"
        )
        raise ConfigError(msg)
    if np.any(x.mean(axis=0) <= 0):
        msg = "the RGB trace has a channel with a non-positive mean; pass raw pixel means"
        raise ConfigError(msg)
    return x


def green(rgb: ArrayLike, fs: float) -> Array:
    """GREEN (Verkruysse et al. 2008): the green channel of the trace, mean removed."""
    x = as_rgb_trace(rgb, fs, min_s=0.0)
    g = x[:, 1]
    return g - g.mean()


def chrom(rgb: ArrayLike, fs: float, window_s: float = WINDOW_S) -> Array:
    """CHROM (de Haan & Jeanne 2013) BVP, one sample per frame of ``rgb`` ``(T, 3)``."""
    x = as_rgb_trace(rgb, fs, window_s)
    n = x.shape[0]
    win = int(np.ceil(window_s * fs))
    win += win % 2  # even, so the half-window hop tiles exactly
    hop = win // 2
    b, a = scipy.signal.butter(3, CHROM_BAND_HZ, btype="bandpass", fs=fs)
    hann = scipy.signal.windows.hann(win, sym=False)
    out = np.zeros(n)
    for start in range(0, n - win + 1, hop):
        c = x[start : start + win]
        cn = c / np.maximum(c.mean(axis=0), _EPS)
        xs = 3 * cn[:, 0] - 2 * cn[:, 1]
        ys = 1.5 * cn[:, 0] + cn[:, 1] - 1.5 * cn[:, 2]
        xf = scipy.signal.filtfilt(b, a, xs, padlen=min(3 * max(len(a), len(b)), win - 1))
        yf = scipy.signal.filtfilt(b, a, ys, padlen=min(3 * max(len(a), len(b)), win - 1))
        alpha = np.std(xf) / max(np.std(yf), _EPS)
        s = xf - alpha * yf
        out[start : start + win] += hann * s
    return out


def pos(rgb: ArrayLike, fs: float, window_s: float = WINDOW_S) -> Array:
    """POS (Wang et al. 2017) BVP, one sample per frame of ``rgb`` ``(T, 3)``."""
    x = as_rgb_trace(rgb, fs, window_s)
    n = x.shape[0]
    win = int(np.ceil(window_s * fs))
    out = np.zeros(n)
    for end in range(win, n + 1):
        c = x[end - win : end]
        cn = (c / np.maximum(c.mean(axis=0), _EPS)).T
        s = POS_PROJECTION @ cn
        h = s[0] + np.std(s[0]) / max(np.std(s[1]), _EPS) * s[1]
        out[end - win : end] += h - h.mean()
    return out


METHODS: dict[str, Callable[..., Array]] = {"green": green, "chrom": chrom, "pos": pos}


def unsupervised_bvp(method: str, rgb: ArrayLike, fs: float) -> Array:
    """BVP from ``rgb`` ``(T, 3)`` at ``fs`` fps with ``method`` (``green``, ``chrom``, ``pos``).

    Raises:
        ConfigError: Unknown method, or a trace that is too short, non-finite or mis-shaped.
    """
    key = method.lower()
    if key not in METHODS:
        msg = f"unsupervised rPPG method {method!r} is not one of: {', '.join(METHODS)}"
        raise ConfigError(msg)
    return METHODS[key](rgb, fs)
