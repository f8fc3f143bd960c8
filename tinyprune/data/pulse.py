"""Pulse (blood-volume) waveforms for the synthetic rPPG generator (docs/methods.md §10.1).

Two sources, one output type (:class:`Pulse`):

* :func:`synthesize_pulse`: a seeded model waveform. Instantaneous heart rate with slow drift,
  beat-to-beat intervals with respiratory sinus arrhythmia and jitter, a two-Gaussian beat
  (systolic + dicrotic) laid out beat by beat on a 1 kHz grid, respiratory amplitude modulation and
  baseline wander, low-passed and sampled at the frame rate and at 60 Hz (the "oximeter").
* :func:`heartpy_pulse`: a real contact-PPG recording shipped inside the heartpy wheel, band-passed
  and resampled. The CSV files are read directly: heartpy's own loader imports ``pkg_resources``,
  which setuptools >= 81 no longer provides, so importing heartpy fails on this machine.

Every waveform is normalised so its pulsatile part spans about [-1, 1] (so the skin modulation has
peak-to-peak ``2 a``) and positive means more blood volume (the pleth convention of oximeters).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal

from tinyprune.errors import ConfigError

FINE_HZ = 1000.0
OXIMETER_HZ = 60.0
HEARTPY_FILES = {0: "data.csv", 1: "data2.csv", 2: "data3.csv"}


@dataclass(frozen=True)
class Pulse:
    """A pulse waveform on a dense grid plus the heart rate it was made with.

    Attributes:
        t: Sample times in seconds (uniform, ``FINE_HZ``), starting at 0.
        value: Normalised blood-volume pulse at ``t``.
        beats: Beat onset times (s) used to build the waveform (or detected, for real PPG).
        params: Everything drawn or chosen (JSON-serialisable).
    """

    t: np.ndarray
    value: np.ndarray
    beats: np.ndarray
    params: dict[str, object]

    def at(self, times: np.ndarray) -> np.ndarray:
        """Pulse value at arbitrary times (linear interpolation of the dense grid)."""
        return np.interp(times, self.t, self.value)

    def hr_at(self, times: np.ndarray) -> np.ndarray:
        """Instantaneous heart rate (bpm) at ``times``: 60 / the beat interval containing it."""
        rr = np.diff(self.beats)
        mid = self.beats[:-1] + rr / 2
        return np.interp(times, mid, 60.0 / rr)

    def mean_hr(self, start: float, stop: float) -> float:
        """Mean beat rate (bpm) over ``[start, stop)``: whole beats in the window per minute."""
        inside = self.beats[(self.beats >= start) & (self.beats < stop)]
        if inside.size < 2:
            return float(np.mean(self.hr_at(np.array([start, stop]))))
        return float(60.0 * (inside.size - 1) / (inside[-1] - inside[0]))


def synthesize_pulse(
    rng: np.random.Generator,
    duration_s: float,
    hr_bpm: float | None = None,
    hr_drift_bpm: float | None = None,
    rsa: bool = True,
    respiration: bool = True,
) -> Pulse:
    """Draw a model pulse waveform (docs/methods.md §10.1, all distributions as specified there).

    Args:
        rng: Source of randomness (the caller seeds it).
        duration_s: Length in seconds (the waveform covers ``[0, duration_s + 1]``).
        hr_bpm: Mean heart rate ``HR0``; ``None`` draws ``U(50, 140)``.
        hr_drift_bpm: Drift amplitude ``A_d``; ``None`` draws ``U(0, 8)``; 0 disables drift.
        rsa: Respiratory sinus arrhythmia and beat jitter on/off.
        respiration: Respiratory amplitude modulation and baseline wander on/off.

    Returns:
        The waveform with its parameters.
    """
    if not duration_s > 0:
        msg = f"pulse duration must be > 0 s, got {duration_s!r}"
        raise ConfigError(msg)
    p = _draw_params(rng, hr_bpm, hr_drift_bpm, rsa, respiration)
    beats = _beat_times(p, duration_s + 1.0, rng)
    t = np.arange(0.0, duration_s + 1.0, 1.0 / FINE_HZ)
    k = np.clip(np.searchsorted(beats, t, side="right") - 1, 0, beats.size - 2)
    u = (t - beats[k]) / (beats[k + 1] - beats[k])
    shape = np.exp(-((u - 0.25) ** 2) / (2 * 0.08**2))
    shape += float(p["dicrotic_amp"]) * np.exp(-((u - 0.55) ** 2) / (2 * 0.12**2))
    sos = signal.butter(4, 8.0, fs=FINE_HZ, output="sos")
    shape = _unit_range(signal.sosfiltfilt(sos, shape))
    resp = np.sin(2 * np.pi * float(p["resp_hz"]) * t)
    value = shape * (1 + float(p["resp_am"]) * resp) + float(p["wander"]) * resp
    return Pulse(t, value, beats, p)


def _draw_params(
    rng: np.random.Generator,
    hr_bpm: float | None,
    hr_drift_bpm: float | None,
    rsa: bool,
    respiration: bool,
) -> dict[str, object]:
    """Draw the §10.1 parameters (the draw order is fixed so seeds stay reproducible)."""
    return {
        "source": "synthetic",
        "hr0_bpm": float(rng.uniform(50, 140)) if hr_bpm is None else float(hr_bpm),
        "drift_bpm": float(rng.uniform(0, 8)) if hr_drift_bpm is None else float(hr_drift_bpm),
        "drift_hz": float(rng.uniform(0.005, 0.02)),
        "drift_phase": float(rng.uniform(0, 2 * np.pi)),
        "rsa": float(rng.uniform(0.02, 0.05)) if rsa else 0.0,
        "jitter_std": 0.01 if rsa else 0.0,
        "resp_hz": float(rng.uniform(0.2, 0.35)),
        "resp_am": float(rng.uniform(0.05, 0.10)) if respiration else 0.0,
        "wander": 0.3 if respiration else 0.0,
        "dicrotic_amp": float(rng.uniform(0.3, 0.6)),
        "first_beat_s": float(rng.uniform(-1.0, 0.0)),
    }


def _beat_times(p: dict[str, object], stop: float, rng: np.random.Generator) -> np.ndarray:
    """Beat onsets: RR_k = 60/HR(t_k) * (1 + a_rsa sin(2 pi f_r t_k) + e_k)."""
    beats = [float(p["first_beat_s"]) - 60.0 / float(p["hr0_bpm"])]
    while beats[-1] < stop + 0.5:
        tk = beats[-1]
        hr = float(p["hr0_bpm"]) + float(p["drift_bpm"]) * np.sin(
            2 * np.pi * float(p["drift_hz"]) * tk + float(p["drift_phase"])
        )
        mod = float(p["rsa"]) * np.sin(2 * np.pi * float(p["resp_hz"]) * tk)
        jitter = float(rng.normal(0, 1)) * float(p["jitter_std"])
        beats.append(tk + 60.0 / hr * (1 + mod + jitter))
    return np.asarray(beats)


def _unit_range(x: np.ndarray) -> np.ndarray:
    """Map to [-1, 1] using robust extremes (0.5th / 99.5th percentiles)."""
    lo, hi = np.percentile(x, [0.5, 99.5])
    return (2 * (x - lo) / max(hi - lo, 1e-12) - 1).astype(np.float64)


def heartpy_csv(example: int) -> Path:
    """Path of heartpy's bundled example recording ``example`` (0, 1 or 2)."""
    if example not in HEARTPY_FILES:
        msg = f"heartpy example must be one of {sorted(HEARTPY_FILES)}, got {example!r}"
        raise ConfigError(msg)
    spec = importlib.util.find_spec("heartpy")
    if spec is None or not spec.submodule_search_locations:
        msg = "the heartpy package is not installed; `pip install heartpy` provides the real PPG"
        raise ConfigError(msg)
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / HEARTPY_FILES[example]
    if not path.is_file():
        msg = f"heartpy's example recording {path} is missing; reinstall heartpy"
        raise ConfigError(msg)
    return path


def load_heartpy_recording(example: int) -> tuple[np.ndarray, float]:
    """Read heartpy's real contact PPG ``example`` without importing heartpy.

    Returns:
        ``(samples, fs)``: raw ADC values and the sampling rate (100 Hz for example 0; measured
        from the timer / datetime column for examples 1 and 2).
    """
    path = heartpy_csv(example)
    if example == 0:
        return np.loadtxt(path, dtype=np.float64), 100.0
    if example == 1:
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
        timer_ms, values = table[:, 0], table[:, 1]
        return values, (len(timer_ms) - 1) / ((timer_ms[-1] - timer_ms[0]) / 1000.0)
    stamps, values_list = [], []
    with open(path, encoding="ascii") as f:
        next(f)
        for line in f:
            stamp, value = line.rstrip("\n").split(",")
            stamps.append(stamp)
            values_list.append(float(value))
    t = np.array(stamps, dtype="datetime64[us]").astype(np.int64) / 1e6
    return np.asarray(values_list), (len(t) - 1) / (t[-1] - t[0])


def _detect_beats(x: np.ndarray, fs: float) -> np.ndarray:
    """Systolic peak times (s): peaks at least 0.6 of the dominant period apart.

    The minimum distance comes from the Welch spectrum peak in 0.6-3.3 Hz, which keeps the
    dicrotic notch's second peak from counting as a beat.
    """
    freqs, power = signal.welch(x, fs=fs, nperseg=min(x.size, int(fs * 16)), nfft=1 << 16)
    band = (freqs >= 0.6) & (freqs <= 3.3)
    f0 = float(freqs[band][np.argmax(power[band])])
    peaks, _ = signal.find_peaks(x, distance=max(1, int(0.6 * fs / f0)))
    return peaks / fs


def heartpy_pulse(example: int, duration_s: float, start_s: float = 0.0) -> Pulse:
    """A real PPG segment as a :class:`Pulse` (band-passed 0.5-8 Hz, normalised, 1 kHz grid).

    Args:
        example: heartpy recording 0 (24.8 s), 1 (128 s) or 2 (682 s).
        duration_s: Segment length; must fit in the recording after ``start_s``.
        start_s: Offset into the recording.
    """
    raw, fs = load_heartpy_recording(example)
    length = raw.size / fs
    if start_s < 0 or start_s + duration_s + 1.0 > length:
        msg = (
            f"heartpy recording {example} lasts {length:.1f} s; a segment of {duration_s} s "
            f"(+1 s margin) from {start_s} s does not fit; choose a shorter duration"
        )
        raise ConfigError(msg)
    sos = signal.butter(2, [0.5, 8.0], btype="band", fs=fs, output="sos")
    filtered = signal.sosfiltfilt(sos, raw - raw.mean())
    t_src = np.arange(raw.size) / fs - start_s
    t = np.arange(0.0, duration_s + 1.0, 1.0 / FINE_HZ)
    value = _unit_range(np.interp(t, t_src, filtered))
    beats = _detect_beats(filtered, fs) - start_s
    beats = beats[(beats > -3.0) & (beats < duration_s + 4.0)]
    params: dict[str, object] = {
        "source": f"heartpy:{example}",
        "fs_recording": float(fs),
        "start_s": float(start_s),
    }
    return Pulse(t, value, beats, params)
