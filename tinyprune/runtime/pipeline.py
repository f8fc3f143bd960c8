"""Heart rate from video: frames -> face box -> model (or GREEN/CHROM/POS) -> BVP -> HR, SQI, HRV.

Why: one streaming loop serves files, cameras, frame folders and PURE/UBFC recordings, the int8
net and the unsupervised baselines alike, so a user compares them on equal terms. The Python API
follows open-rppg: ``RppgPipeline(model).process_video(path)`` returns a dict with ``hr``,
``sqi``, ``hrv``, ``bvp`` and ``timestamps`` (plus the HR read every second).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyprune.data.preprocess import crop_resize
from tinyprune.errors import ConfigError
from tinyprune.runtime import hr as hrmod
from tinyprune.runtime.face import FaceTracker
from tinyprune.runtime.hrv import hrv_from_beats
from tinyprune.runtime.sources import FrameSource, open_video
from tinyprune.runtime.unsupervised import unsupervised_bvp
from tinyprune.runtime.windows import OverlapAdd, WindowBuffer, model_input

log = logging.getLogger(__name__)
METHODS = ("net", "pos", "chrom", "green")
MIN_HR_S = 4.0  # the first reading waits for this much signal (a few beats)
Reading = dict[str, Any]


STAGES = ("decode", "face", "crop", "preprocess", "inference", "hr")


class StageClock:
    """Wall time per pipeline stage: each :meth:`lap` charges the time since the last one."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        """Charge the time since the previous lap to ``stage``."""
        now = time.perf_counter()
        self.seconds[stage] += now - self._last
        self._last = now

    def total(self) -> float:
        """Seconds charged so far."""
        return sum(self.seconds.values())

    def per_frame_ms(self, frames: int) -> dict[str, float]:
        """Milliseconds per frame of each stage."""
        return {k: 1000.0 * v / max(frames, 1) for k, v in self.seconds.items()}


@dataclass
class _Stream:
    """What a stream accumulates: the BVP overlap-add, the RGB trace, the window buffer."""

    ola: OverlapAdd
    trace: list[np.ndarray]
    buf: WindowBuffer | None


class RppgPipeline:
    """Streaming rPPG on frames.

    Args:
        model: Run/export folder, ``.tflite`` path or a loaded
            :class:`~tinyprune.runtime.model.TfliteModel`; ``None`` with an unsupervised method.
        method: ``net`` or an unsupervised baseline (``pos``, ``chrom``, ``green``).
        threads: LiteRT XNNPACK threads.
        stride: Frames between window starts (default: half a window).
        hr_every_s: Seconds between HR readings.
        hr_window_s: Seconds of BVP each reading uses.
        on_reading: Called with each reading as it is made (the live terminal line).
    """

    def __init__(
        self,
        model: Any = None,
        *,
        method: str = "net",
        threads: int = 1,
        stride: int | None = None,
        hr_every_s: float = 1.0,
        hr_window_s: float = 10.0,
        on_reading: Callable[[Reading], None] | None = None,
    ) -> None:
        if method not in METHODS:
            msg = f"method {method!r} is not one of: {', '.join(METHODS)}"
            raise ConfigError(msg)
        if method == "net" and model is None:
            msg = "--method net needs a model (a run folder or a .tflite)"
            raise ConfigError(msg)
        if hr_every_s <= 0 or hr_window_s < MIN_HR_S:
            msg = f"need hr_every_s > 0 and hr_window_s >= {MIN_HR_S}"
            raise ConfigError(msg)
        self.method, self.hr_every_s, self.hr_window_s = method, hr_every_s, hr_window_s
        self.on_reading = on_reading
        self.model = None
        if method == "net":
            from tinyprune.runtime.model import TfliteModel

            self.model = (
                model if isinstance(model, TfliteModel) else TfliteModel(model, threads=threads)
            )
            c = self.model.contract
            if c.task != "rppg":
                msg = f"{self.model.path} is a {c.task} model; `infer` on images gives its labels"
                raise ConfigError(msg)
            self.stride = stride or max(1, c.frames // 2)

    @property
    def diff(self) -> bool:
        """The BVP is a first difference (DiffNormalized labels)."""
        return self.model is not None and self.model.contract.label_type == "DiffNormalized"

    def process_video(self, path: str | Path) -> dict[str, Any]:
        """HR, SQI, HRV, BVP and timestamps of a video file."""
        return self.process_source(open_video(path))

    def process_source(self, source: FrameSource) -> dict[str, Any]:
        """Run the pipeline on a :class:`FrameSource`."""
        result = self.process_frames(source.frames, source.fs)
        result["source"] = source.name
        result["device_hr"] = source.device_hr
        return result

    def process_frames(self, frames: Iterable[np.ndarray], fs: float) -> dict[str, Any]:
        """Run the pipeline on RGB ``uint8`` frames at ``fs`` Hz; returns the result dict.

        ``result["profile_ms_per_frame"]`` says where the time went (decode = waiting for the
        source's next frame, face box, crop + resize, normalisation, inference, HR readings).
        """
        c = self.model.contract if self.model is not None else None
        if c is not None and abs(fs - c.fs) > 0.05 * c.fs:
            log.warning("video at %.1f fps but the net was trained at %.1f fps", fs, c.fs)
        tracker = FaceTracker(fs, enlarge=c.enlarge if c else 1.5, detect=c.detect if c else True)
        state = _Stream(OverlapAdd(), [], WindowBuffer(c.frames, self.stride) if c else None)
        readings: list[Reading] = []
        every, next_at, n = max(1, round(self.hr_every_s * fs)), round(MIN_HR_S * fs), 0
        clock, cpu0 = StageClock(), time.process_time()
        for n, frame in enumerate(frames, start=1):
            clock.lap("decode")
            box = tracker(frame)
            clock.lap("face")
            self._step(frame, box, state, clock)
            if n >= next_at:
                next_at += every
                bvp = self._bvp(state.ola, state.trace, fs, self.hr_window_s)
                self._read(readings, n / fs, bvp, fs)
                clock.lap("hr")
        if n == 0:
            msg = "the source gave no frames"
            raise ConfigError(msg)
        bvp = self._bvp(state.ola, state.trace, fs, None)
        result = self._summary(bvp, fs, readings, n, clock.total())
        result["profile_ms_per_frame"] = clock.per_frame_ms(n)
        result["cpu_s"] = time.process_time() - cpu0  # this process's CPU time: load-proof
        if c is not None:
            result["preprocessing"] = c.to_dict()
        return result

    def _step(self, frame: np.ndarray, box: Any, state: _Stream, clock: StageClock) -> None:
        """One frame after its face box: crop, and a model window when one is due."""
        if state.buf is None:
            r, col, h, w = box
            state.trace.append(frame[r : r + h, col : col + w].reshape(-1, 3).mean(axis=0))
            clock.lap("crop")
            return
        c = self.model.contract  # type: ignore[union-attr]
        due = state.buf.push(crop_resize(frame, box, c.height))
        clock.lap("crop")
        if due is not None:
            x = model_input(due[1], c)
            clock.lap("preprocess")
            state.ola.add(due[0], self.model(x)[0])  # type: ignore[misc]
            clock.lap("inference")

    def _bvp(
        self, ola: OverlapAdd, trace: list[np.ndarray], fs: float, last_s: float | None
    ) -> np.ndarray:
        keep = None if last_s is None else round(last_s * fs)
        if self.model is not None:
            s = ola.stream()
            return s if keep is None else s[-keep:]
        x = np.asarray(trace if keep is None else trace[-keep:])
        if len(x) < round(MIN_HR_S * fs):
            return np.zeros(0)
        return unsupervised_bvp(self.method, x, fs)

    def _read(self, out: list[Reading], t: float, bvp: np.ndarray, fs: float) -> None:
        if len(bvp) < round(MIN_HR_S * fs):
            return
        try:
            est = hrmod.estimate_hr(bvp, fs, diff=self.diff)
        except ConfigError as e:
            log.debug("no HR at t=%.1f s: %s", t, e)
            return
        reading = {"t": round(t, 3), "hr": est.bpm, "sqi": est.sqi, "hr_method": est.method}
        out.append(reading)
        if self.on_reading is not None:
            self.on_reading(reading)

    def _summary(
        self, bvp: np.ndarray, fs: float, readings: list[Reading], n: int, elapsed: float
    ) -> dict[str, Any]:
        if len(bvp) < round(MIN_HR_S * fs):
            msg = f"{n} frames at {fs:.1f} fps are too few for a heart rate (need {MIN_HR_S} s)"
            raise ConfigError(msg)
        est = hrmod.estimate_hr(bvp, fs, diff=self.diff)
        x = hrmod.preprocess(bvp, fs, diff=self.diff)
        beats = hrmod.detect_beats(x, fs, est.bpm)
        hrv = hrv_from_beats(beats).to_dict() if len(beats) >= 3 else None
        return {
            "method": self.method,
            "hr": est.bpm,
            "sqi": est.sqi,
            "hr_fft": est.fft_bpm,
            "hr_peak": est.peak_bpm,
            "hr_method": est.method,
            "hrv": hrv,
            "beats": [float(b) for b in beats],
            "bvp": [float(v) for v in bvp],
            "timestamps": [round(i / fs, 4) for i in range(len(bvp))],
            "readings": readings,
            "fs": fs,
            "frames": n,
            "frames_per_s": n / elapsed if elapsed > 0 else None,
        }
