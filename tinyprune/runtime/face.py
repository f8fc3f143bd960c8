"""A face box for every frame: OpenCV's bundled Haar cascade, tracked, re-detected when lost.

Why: training crops each video with one box from its first frame (rPPG-Toolbox's rule, enlarged
1.5x; :func:`tinyprune.data.preprocess.enlarged_box`). A live stream cannot keep one box for
ever, so the tracker keeps the box steady (the same crop from window to window, as in training)
and re-runs the detector every ``redetect_s`` seconds, first only in the region around the box
(a small image, so cheap), then on the whole frame if the face is not there; it moves the box
only when the face has moved by more than ``move_frac`` of the box side, and after
``lost_after`` failed detections in a row it falls back to the centre crop until the face is
found again.
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
ROI_WIDTH = 96  # a tracked face's search region is searched at most this wide
ROI_GROW = 1.5  # the search region around a tracked box, times its side

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


def detect_faces(cascade: object, rgb: np.ndarray, roi: Box | None = None) -> list[Box]:
    """Faces ``(row, col, h, w)`` in full-frame pixels, largest first.

    With ``roi`` (``(row, col, h, w)``) only that region is searched, at ``ROI_WIDTH`` pixels
    and for faces of 0.3-0.75 of its side: the cheap re-detection of a tracked face.
    """
    import cv2

    r0, c0 = (0, 0) if roi is None else roi[:2]
    region = rgb if roi is None else rgb[r0 : r0 + roi[2], c0 : c0 + roi[3]]
    h, w = region.shape[:2]
    f = min(1.0, (DETECT_WIDTH if roi is None else ROI_WIDTH) / w)
    grey = cv2.cvtColor(np.ascontiguousarray(region), cv2.COLOR_RGB2GRAY)
    if f < 1.0:
        grey = cv2.resize(grey, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
    short = min(grey.shape)
    # a tracked face fills 1 / (ROI_GROW x enlarge) ~ 0.44 of its region: search 0.3-0.75 only
    lo, hi = (
        (max(20, short // 8), short) if roi is None else (max(20, short * 3 // 10), short * 3 // 4)
    )
    found = cascade.detectMultiScale(  # type: ignore[attr-defined]
        grey, scaleFactor=1.1, minNeighbors=4, minSize=(lo, lo), maxSize=(hi, hi)
    )
    boxes = [(r0 + int(y / f), c0 + int(x / f), int(bh / f), int(bw / f)) for x, y, bw, bh in found]
    return sorted(boxes, key=lambda b: -b[2] * b[3])


def search_region(box: Box, shape: tuple[int, int], grow: float = ROI_GROW) -> Box:
    """The square around a tracked ``box`` (``grow`` times its side) clipped to the frame."""
    r, c, h, w = box
    side = min(round(max(h, w) * grow), shape[0], shape[1])
    top = min(max(round(r + h / 2 - side / 2), 0), shape[0] - side)
    left = min(max(round(c + w / 2 - side / 2), 0), shape[1] - side)
    return top, left, side, side


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
        faces: list[Box] = []
        if self.box is not None:  # cheap: look where the face was
            faces = detect_faces(self.cascade, rgb, search_region(self.box, (shape[0], shape[1])))
        if not faces:
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
