"""Where frames come from: a video file, a camera, a folder of images, a PURE or UBFC recording.

Why: every source yields RGB ``uint8 [H, W, 3]`` frames plus its frame rate (and, for PURE/UBFC,
the device's own HR as a reference), so the pipeline never branches on the source. Video files
and cameras go through OpenCV; uncompressed DIB AVIs (UBFC's and tinyprune's own writer's
format, which OpenCV's FFmpeg aborts on, FACTS.md) through the project's AVI reader.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyprune.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class FrameSource:
    """A stream of RGB frames.

    Attributes:
        name: What it is (path, ``camera:N``, ...).
        fs: Frame rate in Hz.
        frames: Iterator of ``uint8 [H, W, 3]`` RGB frames.
        device_hr: The recording's own HR (bpm, mean over the recording) when the format has it.
        live: A camera (frames arrive in real time; no known end).
    """

    name: str
    fs: float
    frames: Iterator[np.ndarray] = field(repr=False)
    device_hr: float | None = None
    live: bool = False


def _cv2():  # noqa: ANN202 -- OpenCV is imported when a source needs it
    import cv2

    return cv2


def _capture_frames(cap: object, max_frames: int | None) -> Iterator[np.ndarray]:
    cv2 = _cv2()
    n = 0
    try:
        while max_frames is None or n < max_frames:
            ok, bgr = cap.read()  # type: ignore[attr-defined]
            if not ok:
                return
            n += 1
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()  # type: ignore[attr-defined]


def _is_dib_avi(path: Path) -> bool:
    from tinyprune.data.avi import read_avi_info

    try:
        read_avi_info(path)
    except ConfigError:
        return False
    return True


def open_video(
    path: str | Path, fps: float | None = None, max_frames: int | None = None
) -> FrameSource:
    """A video file (any format OpenCV's FFmpeg reads; uncompressed AVI via the project's reader).

    Raises:
        ConfigError: missing file, or one OpenCV cannot open.
    """
    p = Path(path)
    if not p.is_file():
        msg = f"video {p} does not exist"
        raise ConfigError(msg)
    if p.suffix.lower() == ".avi" and _is_dib_avi(p):
        from tinyprune.data.avi import iter_avi, read_avi_info

        return FrameSource(str(p), fps or read_avi_info(p).fps, iter_avi(p, max_frames))
    cv2 = _cv2()
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        msg = f"OpenCV cannot open the video {p}; convert it to MJPG .avi or mp4"
        raise ConfigError(msg)
    rate = fps or float(cap.get(cv2.CAP_PROP_FPS)) or 30.0
    return FrameSource(str(p), rate, _capture_frames(cap, max_frames))


def open_camera(index: int, fps: float | None = None, max_frames: int | None = None) -> FrameSource:
    """Camera ``index`` through OpenCV (V4L2 on a Raspberry Pi).

    Raises:
        ConfigError: the camera does not open.
    """
    cv2 = _cv2()
    cap = cv2.VideoCapture(int(index))
    if not cap.isOpened():
        msg = f"camera {index} does not open; list cameras with `v4l2-ctl --list-devices`"
        raise ConfigError(msg)
    if fps:
        cap.set(cv2.CAP_PROP_FPS, fps)
    rate = fps or float(cap.get(cv2.CAP_PROP_FPS)) or 30.0
    return FrameSource(f"camera:{index}", rate, _capture_frames(cap, max_frames), live=True)


def _natural_key(p: Path) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def open_frames(
    folder: str | Path, fps: float | None = None, max_frames: int | None = None
) -> FrameSource:
    """A folder of image files (PNG/JPEG/BMP), in natural name order, at ``fps`` (default 30).

    Raises:
        ConfigError: not a folder, or no image in it.
    """
    base = Path(folder)
    files = (
        sorted((f for f in base.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
        if base.is_dir()
        else []
    )
    if not files:
        msg = f"{base} is not a folder of frames ({', '.join(IMAGE_SUFFIXES)} files)"
        raise ConfigError(msg)
    return FrameSource(str(base), fps or 30.0, _read_images(files[:max_frames]))


def _read_images(files: list[Path]) -> Iterator[np.ndarray]:
    cv2 = _cv2()
    for f in files:
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if bgr is None:
            msg = f"cannot read the image {f}"
            raise ConfigError(msg)
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def open_dataset(spec: str, max_frames: int | None = None) -> FrameSource:
    """``pure:DIR`` or ``ubfc:DIR``: the first recording of that folder (or DIR is one recording).

    Raises:
        ConfigError: unknown format or a malformed folder (the readers name the problem).
    """
    kind, _, path = spec.partition(":")
    if kind == "pure":
        from tinyprune.data import pure

        root, name = _pick(Path(path), pure.list_sequences, re.compile(r"^\d{2}-\d{2}$"))
        seq = pure.read_sequence(root, name)
        hr = float(np.mean(seq.pulse_rate)) if seq.pulse_rate.size else None
        return FrameSource(f"pure:{root / name}", seq.fs, seq.frames(max_frames=max_frames), hr)
    if kind == "ubfc":
        from tinyprune.data import ubfc

        root, name = _pick(Path(path), ubfc.list_subjects, re.compile(r"^subject(\d+)$"))
        sub = ubfc.read_subject(root, int(str(name).removeprefix("subject")))
        hr = float(np.mean(sub.hr)) if sub.hr.size else None
        return FrameSource(
            f"ubfc:{sub.video.parent}", sub.fs, sub.frames(max_frames=max_frames), hr
        )
    msg = f"unknown recording format in {spec!r}; expected pure:DIR or ubfc:DIR"
    raise ConfigError(msg)


def _pick(path: Path, lister: object, pattern: re.Pattern[str]) -> tuple[Path, object]:
    """A data-set root and its first recording, or (parent, name) when ``path`` is one recording."""
    if pattern.match(path.name) and path.is_dir():
        return path.parent, path.name
    names = lister(path)  # type: ignore[operator]
    return path, names[0]
