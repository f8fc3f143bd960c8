"""UBFC-rPPG DATASET_2 on-disk format: reader and writer (docs/methods.md §8.2).

Layout::

    UBFC/subject<N>/vid.avi            uncompressed 8-bit RGB video (~30 fps)
    UBFC/subject<N>/ground_truth.txt   line 1 PPG, line 2 HR (bpm), line 3 time (s), one value
                                       per frame, whitespace separated, scientific notation

DATASET_1's ground truth, ``gtdump.xmp`` (a CSV despite the name: time in ms, HR in bpm, SpO2,
PPG, at the oximeter's ~60 Hz), is read too when a subject folder has no ``ground_truth.txt``;
its PPG and HR are resampled by time to the video's frames.

Videos are read with :mod:`tinyprune.data.avi` (no codec library exists on this machine), lazily,
one frame at a time. The writer produces the same layout so the reader is exercised on real-format
files by the tests and by the synthetic generator.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyprune.data.avi import iter_avi, read_avi_info, write_avi
from tinyprune.data.labels import device_hr
from tinyprune.errors import ConfigError
from tinyprune.fileio import write_text_atomic

_NAME = re.compile(r"^subject(\d+)$")


@dataclass(frozen=True)
class UbfcSubject:
    """One UBFC-rPPG subject: the video path and its per-frame ground truth.

    Attributes:
        subject: Subject number ``N``.
        video: Path of ``vid.avi``.
        ppg: Contact PPG per frame (line 1).
        hr: Sensor HR per frame (line 2).
        times: Frame times in seconds (line 3).
        fs: Frame rate (from the AVI header).
        n_frames: Frames declared by the AVI header.
    """

    subject: int
    video: Path
    ppg: np.ndarray
    hr: np.ndarray
    times: np.ndarray
    fs: float
    n_frames: int

    @property
    def name(self) -> str:
        """Folder name ``subject<N>``."""
        return f"subject{self.subject}"

    def device_hr(self, max_frames: int | None = None) -> float:
        """The oximeter's mean HR (bpm) over the first ``max_frames`` frames (all by default)."""
        return device_hr(self.hr[:max_frames])

    def frames(
        self,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        max_frames: int | None = None,
    ) -> Iterator[np.ndarray]:
        """Yield RGB ``uint8 [H, W, 3]`` frames (``transform`` applied to each)."""
        for frame in iter_avi(self.video, max_frames):
            yield frame if transform is None else transform(frame)

    def read_all(self, max_frames: int | None = None) -> np.ndarray:
        """All frames as ``uint8 [T, H, W, 3]``."""
        return np.stack(list(self.frames(max_frames=max_frames)))


def list_subjects(root: str | Path) -> list[int]:
    """Subject numbers found under ``root`` (folders ``subject<N>``), ascending.

    Raises:
        ConfigError: ``root`` is missing or holds no ``subject<N>`` folder.
    """
    base = Path(root)
    if not base.is_dir():
        msg = f"UBFC-rPPG folder {base} does not exist; expected a folder of 'subject<N>' folders"
        raise ConfigError(msg)
    found = sorted(
        int(m.group(1)) for p in base.iterdir() if p.is_dir() and (m := _NAME.match(p.name))
    )
    if not found:
        msg = (
            f"no UBFC-rPPG subjects in {base}: expected folders 'subject<N>' each with "
            "'vid.avi' and 'ground_truth.txt'"
        )
        raise ConfigError(msg)
    return found


def read_subject(root: str | Path, subject: int) -> UbfcSubject:
    """Read subject ``N``'s ground truth and video header (frames stay on disk).

    Raises:
        ConfigError: missing files, a ground truth without 3 equal-length numeric lines, or
            a video with a codec the AVI reader does not handle.
    """
    folder = Path(root) / f"subject{subject}"
    video, gt, gt1 = folder / "vid.avi", folder / "ground_truth.txt", folder / "gtdump.xmp"
    for path in (video, gt if gt.is_file() or not gt1.is_file() else gt1):
        if not path.is_file():
            msg = (
                f"UBFC-rPPG subject folder {folder} lacks {path.name}: expected 'vid.avi' "
                "and 'ground_truth.txt' (DATASET_2) or 'gtdump.xmp' (DATASET_1)"
            )
            raise ConfigError(msg)
    info = read_avi_info(video)
    if gt.is_file():
        ppg, hr, times = _parse_ground_truth(gt)
    else:
        ppg, hr, times = _parse_gtdump(gt1, info.fps, info.declared_frames)
    return UbfcSubject(subject, video, ppg, hr, times, info.fps, info.declared_frames)


def _parse_gtdump(
    path: Path, fs: float, n_frames: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DATASET_1 ``gtdump.xmp`` (time ms, HR, SpO2, PPG rows) resampled to ``n_frames`` frames."""
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as e:
        msg = f"{path}: not a numeric CSV ({e}); expected rows 'time_ms,HR,SpO2,PPG'"
        raise ConfigError(msg) from e
    if table.shape[1] < 4 or table.shape[0] < 2 or not np.all(np.diff(table[:, 0]) > 0):
        msg = (
            f"{path}: expected >= 2 rows of 'time_ms,HR,SpO2,PPG' with increasing times; "
            f"got shape {table.shape}"
        )
        raise ConfigError(msg)
    t_gt = (table[:, 0] - table[0, 0]) / 1000.0
    times = np.arange(n_frames) / fs
    return np.interp(times, t_gt, table[:, 3]), np.interp(times, t_gt, table[:, 1]), times


def _parse_ground_truth(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lines = [
        ln for ln in path.read_text(encoding="ascii", errors="replace").splitlines() if ln.strip()
    ]
    if len(lines) < 3:
        msg = f"{path} has {len(lines)} non-empty line(s); expected 3 (PPG, HR, time in s)"
        raise ConfigError(msg)
    try:
        rows = [np.array(ln.split(), dtype=np.float64) for ln in lines[:3]]
    except ValueError as e:
        msg = f"{path}: non-numeric value in the ground truth ({e})"
        raise ConfigError(msg) from e
    if len({r.size for r in rows}) != 1:
        msg = (
            f"{path}: lines have {[r.size for r in rows]} values; expected the same count "
            "(one per frame) on all 3 lines"
        )
        raise ConfigError(msg)
    return rows[0], rows[1], rows[2]


def write_subject(
    root: str | Path, subject: int, frames: np.ndarray, fs: float, ppg: np.ndarray, hr: np.ndarray
) -> Path:
    """Write ``subject<N>/vid.avi`` and ``ground_truth.txt`` under ``root``.

    Args:
        root: Dataset folder (created if needed).
        subject: Subject number ``N`` (>= 1).
        frames: ``uint8 [T, H, W, 3]`` RGB.
        fs: Frame rate.
        ppg: PPG per frame ``[T]``.
        hr: HR (bpm) per frame ``[T]``.

    Returns:
        The subject folder.
    """
    n = len(frames)
    if subject < 1 or len(ppg) != n or len(hr) != n:
        msg = (
            f"UBFC writer needs subject >= 1 and one PPG and HR value per frame; got "
            f"subject={subject}, {n} frames, {len(ppg)} PPG, {len(hr)} HR values"
        )
        raise ConfigError(msg)
    folder = Path(root) / f"subject{subject}"
    folder.mkdir(parents=True, exist_ok=True)
    write_avi(folder / "vid.avi", frames, fs)
    times = np.arange(n) / fs
    text = "\n".join(" ".join(f"{v:.7e}" for v in row) for row in (ppg, hr, times)) + "\n"
    write_text_atomic(folder / "ground_truth.txt", text, encoding="ascii")
    return folder
