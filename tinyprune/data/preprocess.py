"""rPPG-Toolbox style preprocessing (docs/methods.md §8.3): face box, resize, normalise, chunk.

Why: every rPPG network here is trained on the toolbox's conventions (face box from the first frame
enlarged 1.5x, area resize to 72x72 or 36x36, ``DiffNormalized`` / ``Standardized`` / ``Raw``
inputs, per-video normalisation before chunking, tail dropped). OpenCV is not available, so the face
detector is scikit-image's bundled LBP frontal-face cascade (instead of the toolbox's Haar cascade)
with a centre-crop fallback, and resizing uses PIL's BOX filter (area averaging, like INTER_AREA).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tinyprune.errors import ConfigError

log = logging.getLogger(__name__)
DATA_TYPES = ("Raw", "DiffNormalized", "Standardized")
LABEL_TYPES = ("Raw", "DiffNormalized", "Standardized")


@dataclass(frozen=True)
class PreprocessConfig:
    """Toolbox preprocessing options.

    Attributes:
        size: Output side (frames become ``size x size``).
        chunk: Frames per chunk (tail shorter than a chunk is dropped).
        data_types: Input types, channels concatenated in this order.
        label_type: Label normalisation.
        enlarge: Face box enlargement around its centre (``LARGE_BOX_COEF``).
        detect: Run the face detector (``False``: centre crop).
    """

    size: int = 72
    chunk: int = 128
    data_types: tuple[str, ...] = ("DiffNormalized",)
    label_type: str = "DiffNormalized"
    enlarge: float = 1.5
    detect: bool = True

    def __post_init__(self) -> None:
        bad = [d for d in self.data_types if d not in DATA_TYPES]
        if bad or not self.data_types or self.label_type not in LABEL_TYPES:
            msg = (
                f"data_types {self.data_types} / label_type {self.label_type!r} invalid; "
                f"each must be one of {', '.join(DATA_TYPES)}"
            )
            raise ConfigError(msg)
        if self.size < 4 or self.chunk < 2 or self.enlarge <= 0:
            msg = (
                f"need size >= 4, chunk >= 2, enlarge > 0; got size={self.size}, "
                f"chunk={self.chunk}, enlarge={self.enlarge}"
            )
            raise ConfigError(msg)


def detect_face_box(frame: np.ndarray, enlarge: float = 1.5) -> tuple[int, int, int, int]:
    """Largest frontal face in ``frame`` as an enlarged square box ``(row, col, h, w)``.

    Uses scikit-image's LBP cascade; falls back (with a warning in the log) to a centred square
    of 60 % of the short side when no face is found or the frame is too small to search.
    """
    h, w = frame.shape[:2]
    found = _detect(frame) if min(h, w) >= 48 else []
    if found:
        best = max(found, key=lambda d: d["width"] * d["height"])
        return enlarged_box((best["r"], best["c"], best["height"], best["width"]), (h, w), enlarge)
    log.warning("no face found in a %dx%d frame; using a centre crop", w, h)
    return fallback_box((h, w), enlarge)


def fallback_box(shape: tuple[int, int], enlarge: float = 1.5) -> tuple[int, int, int, int]:
    """The box used when no face is found: a centred square of 60 % of the short side."""
    h, w = shape
    return _square(h / 2, w / 2, 0.6 * min(h, w) * enlarge / 1.5, h, w)


def enlarged_box(
    det: tuple[int, int, int, int], shape: tuple[int, int], enlarge: float = 1.5
) -> tuple[int, int, int, int]:
    """The training crop rule: a detection ``(row, col, h, w)`` -> an enlarged square box.

    The square has side ``enlarge * max(h, w)`` on the detection's centre, shrunk and shifted
    to fit the ``(H, W)`` frame.
    """
    r, c, dh, dw = det
    return _square(r + dh / 2, c + dw / 2, max(dw, dh) * enlarge, *shape)


def _square(cy: float, cx: float, side: float, h: int, w: int) -> tuple[int, int, int, int]:
    side = min(side, h, w)
    r = int(round(min(max(cy - side / 2, 0), h - side)))
    c = int(round(min(max(cx - side / 2, 0), w - side)))
    return r, c, int(side), int(side)


def centre_box(frame: np.ndarray) -> tuple[int, int, int, int]:
    """The largest centred square of ``frame`` as ``(row, col, h, w)``."""
    h, w = frame.shape[:2]
    side = min(h, w)
    return (h - side) // 2, (w - side) // 2, side, side


def _detect(frame: np.ndarray) -> list[dict[str, int]]:
    from skimage import data as skdata
    from skimage.feature import Cascade

    short = min(frame.shape[:2])
    cascade = Cascade(skdata.lbp_frontal_face_cascade_filename())
    return list(
        cascade.detect_multi_scale(
            img=frame,
            scale_factor=1.2,
            step_ratio=1,
            min_size=(max(24, short // 8),) * 2,
            max_size=(short, short),
        )
    )


def crop_resize(frame: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Crop ``box`` from an RGB uint8 frame and area-resize it to ``size x size`` (uint8)."""
    r, c, h, w = box
    patch = np.ascontiguousarray(frame[r : r + h, c : c + w])
    if patch.size == 0:
        msg = f"face box {box} lies outside the {frame.shape[1]}x{frame.shape[0]} frame"
        raise ConfigError(msg)
    return np.asarray(Image.fromarray(patch).resize((size, size), Image.Resampling.BOX))


def face_crop_video(frames: Iterable[np.ndarray], cfg: PreprocessConfig) -> np.ndarray:
    """Detect the face on the first frame, then crop and resize every frame (streaming).

    Returns:
        ``uint8 [T, size, size, 3]``.
    """
    out: list[np.ndarray] = []
    box: tuple[int, int, int, int] | None = None
    for frame in frames:
        if box is None:
            box = detect_face_box(frame, cfg.enlarge) if cfg.detect else centre_box(frame)
        out.append(crop_resize(frame, box, cfg.size))
    if not out:
        msg = "video has no frames"
        raise ConfigError(msg)
    return np.stack(out)


def diff_normalize(frames: np.ndarray) -> np.ndarray:
    """``(x[t+1] - x[t]) / (x[t+1] + x[t] + 1e-7)`` / std over the video, zero frame appended."""
    x = frames.astype(np.float32)
    d = (x[1:] - x[:-1]) / (x[1:] + x[:-1] + 1e-7)
    d = d / (np.std(d) + 1e-12)
    d = np.concatenate([d, np.zeros_like(x[:1])], axis=0)
    return np.nan_to_num(d, nan=0.0).astype(np.float32)


def standardize(x: np.ndarray) -> np.ndarray:
    """Z-score over the whole array (all frames, pixels and channels), NaN -> 0."""
    x = x.astype(np.float32)
    return np.nan_to_num((x - x.mean()) / (x.std() + 1e-12), nan=0.0).astype(np.float32)


def diff_normalize_label(y: np.ndarray) -> np.ndarray:
    """``diff(y) / std(diff(y))`` with one zero appended."""
    d = np.diff(np.asarray(y, np.float64))
    d = d / (np.std(d) + 1e-12)
    return np.nan_to_num(np.append(d, 0.0), nan=0.0).astype(np.float32)


def normalise_inputs(frames: np.ndarray, data_types: tuple[str, ...]) -> np.ndarray:
    """Apply the input types and concatenate channels: ``float32 [T, H, W, 3 * len(types)]``."""
    parts = {
        "Raw": lambda f: f.astype(np.float32),
        "DiffNormalized": diff_normalize,
        "Standardized": standardize,
    }
    return np.concatenate([parts[t](frames) for t in data_types], axis=-1)


def normalise_label(y: np.ndarray, label_type: str) -> np.ndarray:
    """Apply the label type to a whole-video label."""
    if label_type == "DiffNormalized":
        return diff_normalize_label(y)
    if label_type == "Standardized":
        return standardize(np.asarray(y))
    return np.asarray(y, np.float32)


def chunk(x: np.ndarray, y: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping chunks along time; the short tail is dropped.

    Args:
        x: ``[T, ...]`` inputs.
        y: ``[T]`` labels.
        length: Chunk length.

    Returns:
        ``x`` as ``[N, length, ...]`` and ``y`` as ``[N, length]``.
    """
    if len(x) != len(y):
        msg = f"inputs have {len(x)} frames but labels {len(y)} values; they must match"
        raise ConfigError(msg)
    n = len(x) // length
    return (
        x[: n * length].reshape(n, length, *x.shape[1:]),
        np.asarray(y[: n * length]).reshape(n, length),
    )


def preprocess_video(
    face_frames: np.ndarray, bvp: np.ndarray, cfg: PreprocessConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Normalise a face-cropped video and its label per video, then chunk.

    Args:
        face_frames: ``uint8 [T, S, S, 3]`` (output of :func:`face_crop_video`).
        bvp: ``[T]`` label.
        cfg: Options.

    Returns:
        Clips ``float32 [N, C, chunk, S, S]`` (PyTorch NCDHW per sample) and labels
        ``float32 [N, chunk]``.
    """
    x = normalise_inputs(face_frames, cfg.data_types)
    y = normalise_label(bvp, cfg.label_type)
    xc, yc = chunk(x, y, cfg.chunk)
    return np.ascontiguousarray(xc.transpose(0, 4, 1, 2, 3)), yc.astype(np.float32)


def fft_hr(y: np.ndarray, fs: float, band: tuple[float, float] = (0.6, 3.3)) -> float:
    """HR (bpm) of a label window: periodogram peak inside ``band`` (nfft >= 2048, zero-padded).

    A small copy of the toolbox's FFT rule, kept for callers of this function. The loaders no
    longer use it: a clip of a few frames is too short for an HR of its own, so each clip carries
    its whole video's label HR (:func:`tinyprune.data.labels.label_hr`); evaluation of
    predictions belongs to ``tinyprune.metrics``.
    """
    x = np.asarray(y, np.float64) - np.mean(y)
    nfft = max(2048, 1 << int(np.ceil(np.log2(max(len(x), 2)))))
    freqs = np.fft.rfftfreq(nfft, 1.0 / fs)
    power = np.abs(np.fft.rfft(x, nfft)) ** 2
    inside = (freqs >= band[0]) & (freqs <= band[1])
    return float(60.0 * freqs[inside][np.argmax(power[inside])])
