"""Per-video heart-rate ground truth of the real-format data sets (PURE, UBFC-rPPG).

Two ground truths per video, both over the frames actually used:

* the **label HR**: the whole contact-PPG label waveform at the frame rate through the same HR
  pipeline as the predictions (:func:`tinyprune.runtime.hr.estimate_hr`: toolbox detrend and
  band-pass, sub-harmonic check, beat rate), as rPPG-Toolbox evaluates;
* the **device HR**: the oximeter's own reading (PURE's ``pulseRate``, UBFC's HR row / column),
  averaged over the video; samples <= 0 (no reading yet) are ignored.

A clip of a few frames is far too short for an HR of its own (10 frames at 30 fps give an FFT bin
of 180 bpm), so every clip carries the HR of its whole video.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from tinyprune.errors import ConfigError
from tinyprune.runtime.hr import estimate_hr

MIN_LABEL_S = 2.0  # shorter labels (under ~2 beats) give no HR


def label_hr(bvp: ArrayLike, fs: float, *, diff: bool = False) -> float:
    """HR (bpm) of a video's whole label waveform (nan if the label is shorter than 2 s).

    Args:
        bvp: The label at one value per frame.
        fs: Frame rate.
        diff: The label is a first difference (DiffNormalized): integrate first.
    """
    y = np.asarray(bvp, dtype=np.float64).reshape(-1)
    if not fs > 0:
        msg = f"frame rate must be > 0 to compute a label HR, got {fs!r}"
        raise ConfigError(msg)
    if y.size < MIN_LABEL_S * fs:
        return float("nan")
    return float(estimate_hr(y, fs, diff=diff).bpm)


def device_hr(values: ArrayLike) -> float:
    """Mean of the device's HR readings (bpm), ignoring non-finite and non-positive ones."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    ok = np.isfinite(v) & (v > 0)
    return float(v[ok].mean()) if ok.any() else float("nan")
