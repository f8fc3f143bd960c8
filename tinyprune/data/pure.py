"""PURE (Stricker et al., RO-MAN 2014) on-disk format: reader and writer (docs/methods.md §8.1).

Layout::

    PURE/01-01/01-01/Image<timestamp_ns>.png   lossless RGB frames (~30 Hz)
    PURE/01-01/01-01.json                       {"/FullPackage": [...~60 Hz oximeter...],
                                                 "/Image": [{"Timestamp": ns}, ...]}

``/FullPackage`` entries are ``{"Timestamp": ns, "Value": {"waveform": int, "pulseRate": int,
"o2saturation": int, ...}}``. Labels are resampled to one value per frame either by index (what
rPPG-Toolbox does: ``np.interp`` on a uniform grid, timestamps ignored) or by timestamp [R].
Frames are read lazily so that a one-minute 640x480 sequence can be cropped frame by frame instead
of holding 1.6 GB in memory. The writer exists so tests and the synthetic generator can exercise
this reader on real-format files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tinyprune.data.labels import device_hr
from tinyprune.errors import ConfigError
from tinyprune.fileio import write_text_atomic

_NAME = re.compile(r"^\d{2}-\d{2}$")
T0_NS = 1_392_643_993_642_815_000  # an epoch-ns start like PURE's (Feb 2014); any value works


@dataclass(frozen=True)
class PureSequence:
    """One PURE sequence: frame files with timestamps and the oximeter stream.

    Attributes:
        name: ``"ss-tt"``.
        frame_files: PNG paths sorted by timestamp.
        frame_times_ns: Frame timestamps (epoch ns).
        wave: Oximeter pleth waveform (~60 Hz, as stored).
        wave_times_ns: Its timestamps.
        pulse_rate: Oximeter HR (bpm) per waveform sample.
    """

    name: str
    frame_files: tuple[Path, ...]
    frame_times_ns: np.ndarray
    wave: np.ndarray
    wave_times_ns: np.ndarray
    pulse_rate: np.ndarray

    @property
    def subject(self) -> int:
        """Subject number (first field of ``ss-tt``)."""
        return int(self.name[:2])

    @property
    def fs(self) -> float:
        """Frame rate from the frame timestamps."""
        span = (self.frame_times_ns[-1] - self.frame_times_ns[0]) / 1e9
        return (len(self.frame_files) - 1) / span if span > 0 else 30.0

    def bvp(self, method: str = "index") -> np.ndarray:
        """Waveform at one value per frame, by ``"index"`` (toolbox) or ``"timestamp"``."""
        n = len(self.frame_files)
        if method == "index":
            return np.interp(
                np.linspace(1, self.wave.size, n),
                np.linspace(1, self.wave.size, self.wave.size),
                self.wave,
            )
        if method == "timestamp":
            return np.interp(
                self.frame_times_ns.astype(np.float64),
                self.wave_times_ns.astype(np.float64),
                self.wave,
            )
        msg = f"unknown label resampling {method!r}; expected 'index' or 'timestamp'"
        raise ConfigError(msg)

    def device_hr(self, max_frames: int | None = None) -> float:
        """The oximeter's mean ``pulseRate`` (bpm) over the first ``max_frames`` frames (all).

        Samples are those whose timestamps fall within the frames' span; readings <= 0 (the
        oximeter's "no value yet") are ignored; nan when none is left.
        """
        stamps = self.frame_times_ns[:max_frames]
        inside = (self.wave_times_ns >= stamps[0]) & (self.wave_times_ns <= stamps[-1])
        return device_hr(self.pulse_rate[inside])

    def frames(
        self,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        max_frames: int | None = None,
    ) -> Iterator[np.ndarray]:
        """Yield RGB ``uint8 [H, W, 3]`` frames in time order (``transform`` applied to each)."""
        for path in self.frame_files[:max_frames]:
            with Image.open(path) as im:
                frame = np.asarray(im.convert("RGB"))
            yield frame if transform is None else transform(frame)

    def read_all(self, max_frames: int | None = None) -> np.ndarray:
        """All frames as ``uint8 [T, H, W, 3]``."""
        return np.stack(list(self.frames(max_frames=max_frames)))


def list_sequences(root: str | Path) -> list[str]:
    """Names ``ss-tt`` of the sequences under ``root``, sorted.

    Raises:
        ConfigError: ``root`` is not a folder or holds no ``ss-tt`` sequence folders.
    """
    base = Path(root)
    if not base.is_dir():
        msg = f"PURE folder {base} does not exist; expected a folder holding 'ss-tt' sequences"
        raise ConfigError(msg)
    names = sorted(p.name for p in base.iterdir() if p.is_dir() and _NAME.match(p.name))
    if not names:
        msg = (
            f"no PURE sequences in {base}: expected sub-folders named like '01-01' each "
            "holding '01-01/' (PNG frames) and '01-01.json'"
        )
        raise ConfigError(msg)
    return names


def read_sequence(root: str | Path, name: str) -> PureSequence:
    """Read the metadata of sequence ``name`` (frames stay on disk until iterated).

    Raises:
        ConfigError: missing JSON or frame folder, malformed JSON, or a listed frame missing.
    """
    seq_dir = Path(root) / name
    json_path, frame_dir = seq_dir / f"{name}.json", seq_dir / name
    if not json_path.is_file() or not frame_dir.is_dir():
        msg = (
            f"PURE sequence {seq_dir} is incomplete: expected {json_path} and the frame "
            f"folder {frame_dir}/ with Image<timestamp>.png files"
        )
        raise ConfigError(msg)
    doc = _load_json(json_path)
    wave_t, wave, rate = _parse_full_package(doc, json_path)
    frame_t = _parse_images(doc, json_path)
    files = tuple(frame_dir / f"Image{t}.png" for t in frame_t)
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        msg = (
            f"{len(missing)} frame(s) listed in {json_path} are missing from {frame_dir}, "
            f"e.g. {missing[0]}; the sequence is incomplete (re-extract the archive)"
        )
        raise ConfigError(msg)
    return PureSequence(name, files, frame_t, wave, wave_t, rate)


def _load_json(path: Path) -> dict[str, object]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        msg = f"{path} is not valid JSON ({e}); expected PURE's '/FullPackage' + '/Image' document"
        raise ConfigError(msg) from e
    if not isinstance(doc, dict) or "/FullPackage" not in doc or "/Image" not in doc:
        keys = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        msg = f"{path} lacks the PURE keys '/FullPackage' and '/Image' (found {keys})"
        raise ConfigError(msg)
    return doc


def _parse_full_package(
    doc: dict[str, object], path: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    entries = doc["/FullPackage"]
    try:
        rows = sorted(
            (
                int(e["Timestamp"]),
                float(e["Value"]["waveform"]),
                float(e["Value"].get("pulseRate", np.nan)),
            )
            for e in entries
        )  # type: ignore
    except (TypeError, KeyError, ValueError) as e:
        msg = (
            f"{path}: malformed '/FullPackage' entry ({e!r}); expected "
            "{'Timestamp': ns, 'Value': {'waveform': int, 'pulseRate': int, ...}}"
        )
        raise ConfigError(msg) from e
    if len(rows) < 2:
        msg = f"{path}: '/FullPackage' holds {len(rows)} samples; need at least 2"
        raise ConfigError(msg)
    arr = np.asarray(rows, dtype=np.float64)
    return arr[:, 0].astype(np.int64), arr[:, 1], arr[:, 2]


def _parse_images(doc: dict[str, object], path: Path) -> np.ndarray:
    try:
        stamps = sorted(int(e["Timestamp"]) for e in doc["/Image"])  # type: ignore[union-attr]
    except (TypeError, KeyError, ValueError) as e:
        msg = f"{path}: malformed '/Image' entry ({e!r}); expected {{'Timestamp': ns}} per frame"
        raise ConfigError(msg) from e
    if not stamps:
        msg = f"{path}: '/Image' lists no frames"
        raise ConfigError(msg)
    return np.asarray(stamps, dtype=np.int64)


def encode_waveform(wave: np.ndarray) -> np.ndarray:
    """Map a normalised pulse (about [-1, 1]) to oximeter-like integers 0..255 (128 + 60 p)."""
    return np.clip(np.rint(128 + 60 * np.asarray(wave, np.float64)), 0, 255).astype(np.int64)


def write_sequence(
    root: str | Path,
    ss: int,
    tt: int,
    frames: np.ndarray,
    fs: float,
    wave60: np.ndarray,
    hr60: np.ndarray,
    t0_ns: int = T0_NS,
) -> Path:
    """Write frames and a 60 Hz waveform as PURE sequence ``ss-tt`` under ``root``.

    Args:
        root: Dataset folder (created if needed).
        ss: Subject number (1-99).
        tt: Setup number (1-99).
        frames: ``uint8 [T, H, W, 3]`` RGB.
        fs: Frame rate.
        wave60: Normalised pulse at 60 Hz (encoded with :func:`encode_waveform`).
        hr60: Heart rate (bpm) at 60 Hz, stored rounded as ``pulseRate``.
        t0_ns: Timestamp of the first frame and first oximeter sample.

    Returns:
        The sequence folder ``root/ss-tt``.
    """
    if not (0 < ss < 100 and 0 < tt < 100):
        msg = f"PURE subject/setup numbers must be in 1..99, got ss={ss}, tt={tt}"
        raise ConfigError(msg)
    name = f"{ss:02d}-{tt:02d}"
    seq_dir = Path(root) / name
    frame_dir = seq_dir / name
    frame_dir.mkdir(parents=True, exist_ok=True)
    frame_t = [t0_ns + round(i * 1e9 / fs) for i in range(len(frames))]
    for t, frame in zip(frame_t, frames, strict=True):
        Image.fromarray(np.ascontiguousarray(frame), "RGB").save(
            frame_dir / f"Image{t}.png", format="PNG", compress_level=1
        )
    codes = encode_waveform(wave60)
    package = [
        {
            "Timestamp": t0_ns + round(i * 1e9 / 60.0),
            "Value": {"waveform": int(w), "pulseRate": int(round(float(h))), "o2saturation": 98},
        }
        for i, (w, h) in enumerate(zip(codes, hr60, strict=True))
    ]
    doc = {"/FullPackage": package, "/Image": [{"Timestamp": t} for t in frame_t]}
    write_text_atomic(seq_dir / f"{name}.json", json.dumps(doc))
    return seq_dir
