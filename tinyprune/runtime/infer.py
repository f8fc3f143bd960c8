"""``tinyprune infer``: the library call behind the command (the CLI only parses and prints).

Why: one function picks the source (``--video`` / ``--camera`` / ``--frames`` / ``--data``) or the
images, runs :class:`~tinyprune.runtime.pipeline.RppgPipeline` or the classifier, and writes the
outputs, so the same call works from Python and from the command line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tinyprune.errors import ConfigError
from tinyprune.runtime import sources


@dataclass(frozen=True)
class InferRequest:
    """What to run.

    Attributes:
        model: Run/export folder or ``.tflite`` (may be ``None`` for an unsupervised method).
        video, camera, frames, data: Exactly one frame source (or ``images``).
        images: Image files for a vision model.
        method: ``net``, ``pos``, ``chrom`` or ``green``.
        threads: LiteRT threads.
        fps: Override the source's frame rate.
        max_frames: Stop after this many frames (a camera runs until Ctrl-C otherwise).
        top_k: Labels per image.
    """

    model: str | None
    video: str | None = None
    camera: int | None = None
    frames: str | None = None
    data: str | None = None
    images: tuple[str, ...] = ()
    method: str = "net"
    threads: int = 1
    fps: float | None = None
    max_frames: int | None = None
    top_k: int = 5


def open_source(req: InferRequest) -> sources.FrameSource:
    """The one frame source the request names.

    Raises:
        ConfigError: none or several sources given.
    """
    given = [k for k in ("video", "camera", "frames", "data") if getattr(req, k) is not None]
    if len(given) != 1:
        msg = (
            "give exactly one of --video FILE, --camera N, --frames DIR, --data pure:DIR|ubfc:DIR"
            f" (got {', '.join('--' + g for g in given) or 'none'})"
        )
        raise ConfigError(msg)
    if req.video is not None:
        return sources.open_video(req.video, req.fps, req.max_frames)
    if req.camera is not None:
        return sources.open_camera(req.camera, req.fps, req.max_frames)
    if req.frames is not None:
        return sources.open_frames(req.frames, req.fps, req.max_frames)
    return sources.open_dataset(str(req.data), req.max_frames)


def live_line(reading: dict[str, Any]) -> None:
    """The live terminal line (stderr): time, HR and signal quality, rewritten in place."""
    sys.stderr.write(
        f"\r t={reading['t']:7.1f} s  HR {reading['hr']:6.1f} bpm  SQI {reading['sqi']:5.1f} dB "
    )
    sys.stderr.flush()


def run_infer(req: InferRequest, on_reading: Callable[[dict[str, Any]], None] | None = None) -> Any:
    """Run the request: a result dict (rPPG) or a list of per-image top-k results (vision).

    Raises:
        ConfigError: bad model, source or options.
    """
    if req.images:
        from tinyprune.runtime.model import TfliteModel
        from tinyprune.runtime.vision import classify_images

        if req.model is None:
            msg = "classifying images needs a model (a run folder or a .tflite)"
            raise ConfigError(msg)
        return classify_images(
            TfliteModel(req.model, threads=req.threads), list(req.images), req.top_k
        )
    from tinyprune.runtime.pipeline import RppgPipeline

    model = req.model if req.method == "net" else None
    pipe = RppgPipeline(model, method=req.method, threads=req.threads, on_reading=on_reading)
    source = open_source(req)
    if source.live and on_reading is None:
        pipe.on_reading = live_line
    return pipe.process_source(source)
