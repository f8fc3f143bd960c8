"""A face box for every frame: OpenCV's bundled Haar cascade, tracked, re-detected when lost.

Why: training crops each video with one box from its first frame (rPPG-Toolbox's rule, enlarged
1.5x; :func:`tinyprune.data.preprocess.enlarged_box`). A live stream cannot keep one box for
ever, so the tracker keeps the box steady (the same crop from window to window, as in training)
and re-runs the detector every ``redetect_s`` seconds; it moves the box only when the face has moved
by more than ``move_frac`` of the box side, and after ``lost_after`` failed detections in a row
it falls back to the centre crop until the face is found again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tinyprune.data.preprocess import enlarged_box, fallback_box
from tinyprune.errors import ConfigError

log = logging.getLogger(__name__)
CASCADE = "haarcascade_frontalface_default.xml"
DETECT_WIDTH = 320  # frames are searched at most this wide (the cascade is slow on full HD)

Box = tuple[int, int, int, int]


def load_cascade() -> object:
    """OpenCV's bundled frontal-face Haar cascade.

    Raises:
        ConfigError: this OpenCV build ships no cascades (opencv-python-headless 5.x).
    """
    import cv2

    root = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = Path(root or "") / CASCADE
    if not hasattr(cv2, "CascadeClassifier") or not path.is_file():
        msg = (
            f"OpenCV {cv2.__version__} ships no Haar cascade ({CASCADE}); install the pinned "
            "opencv-python-headless 4.x: pip install 'tinyprune[pi]'"
        )
        raise ConfigError(msg)
    return cv2.CascadeClassifier(str(path))


def detect_faces(cascade: object, rgb: np.ndarray) -> list[Box]:
    """Faces ``(row, col, h, w)`` in full-frame pixels, largest first."""
    import cv2

    h, w = rgb.shape[:2]
    f = min(1.0, DETECT_WIDTH / w)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if f < 1.0:
        grey = cv2.resize(grey, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
    short = min(grey.shape)
    found = cascade.detectMultiScale(  # type: ignore[attr-defined]
        grey, scaleFactor=1.1, minNeighbors=4, minSize=(max(20, short // 8),) * 2
    )
    boxes = [(int(y / f), int(x / f), int(bh / f), int(bw / f)) for x, y, bw, bh in found]
    return sorted(boxes, key=lambda b: -b[2] * b[3])


class FaceTracker:
    """Per-frame face boxes with the training crop rule.

    Args:
        fs: Frame rate (sets the re-detection period).
        enlarge: Box enlargement (the contract's ``enlarge``).
        detect: ``False``: always the centred square (the contract's ``detect``).
        redetect_s: Seconds between detector runs.
        move_frac: Move the box only when the face centre moved by more than this share of its side.
        lost_after: Failed detections in a row before falling back to the centre crop.
    """

    def __init__(
        self,
        fs: float,
        *,
        enlarge: float = 1.5,
        detect: bool = True,
        redetect_s: float = 1.0,
        move_frac: float = 0.2,
        lost_after: int = 3,
    ) -> None:
        if enlarge <= 0 or redetect_s <= 0 or fs <= 0:
            msg = f"need enlarge, redetect_s, fs > 0; got {enlarge}, {redetect_s}, {fs}"
            raise ConfigError(msg)
        self.enlarge, self.detect, self.move_frac, self.lost_after = (
            enlarge,
            detect,
            move_frac,
            lost_after,
        )
        self.period = max(1, round(redetect_s * fs))
        self.cascade = load_cascade() if detect else None
        self.box: Box | None = None
        self.misses = 0
        self.frame_index = 0
        self.detections = 0

    def __call__(self, rgb: np.ndarray) -> Box:
        """The box for this frame."""
        shape = rgb.shape[:2]
        due = self.box is None or self.frame_index % self.period == 0
        self.frame_index += 1
        if not self.detect:
            if self.box is None:
                side = min(shape)
                self.box = ((shape[0] - side) // 2, (shape[1] - side) // 2, side, side)
            return self.box
        if due:
            self._update(rgb)
        return self.box  # type: ignore[return-value]

    def _update(self, rgb: np.ndarray) -> None:
        shape = rgb.shape[:2]
        faces = detect_faces(self.cascade, rgb)
        self.detections += 1
        if not faces:
            self.misses += 1
            if self.box is None or self.misses == self.lost_after:
                log.warning("no face found; using a centre crop until one is")
                self.box = fallback_box((shape[0], shape[1]), self.enlarge)
            return
        self.misses = 0
        new = enlarged_box(faces[0], (shape[0], shape[1]), self.enlarge)
        if self.box is None or _moved(self.box, new) > self.move_frac:
            self.box = new


def _moved(old: Box, new: Box) -> float:
    """Centre displacement (or side change) relative to the old side."""
    oc = (old[0] + old[2] / 2, old[1] + old[3] / 2)
    nc = (new[0] + new[2] / 2, new[1] + new[3] / 2)
    shift = float(np.hypot(oc[0] - nc[0], oc[1] - nc[1]))
    return max(shift, abs(old[2] - new[2])) / max(old[2], 1)
