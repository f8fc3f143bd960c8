"""Shared fixtures: one synthetic face video (known HR) as MJPG, PURE and UBFC recordings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

HR_TOL_BPM = 3.0  # the acceptance bound for synthetic videos


@dataclass(frozen=True)
class Recordings:
    """Paths of the same synthetic video in three formats, and its true mean HR."""

    mjpg: Path
    pure: Path
    ubfc: Path
    hr: float
    face_box: tuple[int, int, int, int]


def write_mjpg(path: Path, frames: np.ndarray, fs: float) -> Path:
    """Write RGB frames as an MJPG .avi with OpenCV (an independent writer)."""
    import cv2

    h, w = frames.shape[1:3]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fs, (w, h))
    for f in frames:
        out.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    out.release()
    return path


@pytest.fixture(scope="session")
def recordings(tmp_path_factory) -> Recordings:
    """A 12 s, 30 fps, 160x120 video of a real face photo pulsing at 77 bpm (seeded)."""
    pytest.importorskip("cv2")
    from tinyprune.data.synthetic import SyntheticConfig, generate, write_pure, write_ubfc

    root = tmp_path_factory.mktemp("recordings")
    video = generate(
        SyntheticConfig(seed=5, duration_s=12.0, frame_size=(120, 160), face_px=48, hr_bpm=77.0)
    )
    return Recordings(
        write_mjpg(root / "face.avi", video.frames, video.fs),
        write_pure(video, root / "pure").parent,
        write_ubfc(video, root / "ubfc").parent,
        float(video.hr_mean),
        video.face_box,
    )


@pytest.fixture(scope="session")
def int8_net(tmp_path_factory) -> Path:
    """A small TS-CAN (18x18, 10 frames) trained on synthetic clips, exported to int8 (slow)."""
    pytest.importorskip("tensorflow")
    from runtime_netbuild import build_net

    return build_net(tmp_path_factory.mktemp("net"))
