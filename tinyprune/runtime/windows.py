"""The model's exact input from face crops, and overlapping windows -> one BVP stream.

Why: training normalises face-cropped frames (``DiffNormalized`` / ``Standardized`` / ``Raw``,
channels concatenated in the contract's order; :func:`tinyprune.data.preprocess.normalise_inputs`)
and feeds them frame-stacked ``(T*H, W, C)`` (the TFLM-native nets) or as a clip
``(T, H, W, C)`` (3-D nets), channels-last in the int8 model. A stream is cut into windows of
``frames`` frames every ``stride`` frames; the overlapping outputs are averaged (overlap-add
divided by the coverage) into one BVP value per frame.
"""

from __future__ import annotations

import numpy as np

from tinyprune.data.preprocess import normalise_inputs
from tinyprune.errors import ConfigError
from tinyprune.runtime.contract import PreprocessingContract


def model_input(crops: np.ndarray, contract: PreprocessingContract) -> np.ndarray:
    """Face crops ``uint8 [T, H, W, 3]`` -> the model's float input with a batch axis.

    Raises:
        ConfigError: crops that do not match the contract's frames and size.
    """
    t, h, w = contract.frames, contract.height, contract.width
    if crops.shape != (t, h, w, 3):
        msg = f"a window must be {(t, h, w, 3)} face crops, got {crops.shape}"
        raise ConfigError(msg)
    x = normalise_inputs(crops, contract.data_types)
    if contract.layout == "stacked":
        x = x.reshape(t * h, w, contract.channels)
    return x[None]


class OverlapAdd:
    """Accumulates per-window outputs into a per-frame stream (mean of overlapping windows)."""

    def __init__(self) -> None:
        self._sum = np.zeros(0)
        self._count = np.zeros(0)

    def add(self, start: int, values: np.ndarray) -> None:
        """Add one window's outputs for frames ``start .. start + len(values) - 1``."""
        end = start + len(values)
        if end > len(self._sum):
            grow = max(end, 2 * len(self._sum)) - len(self._sum)
            self._sum = np.concatenate([self._sum, np.zeros(grow)])
            self._count = np.concatenate([self._count, np.zeros(grow)])
        self._sum[start:end] += values
        self._count[start:end] += 1

    @property
    def covered(self) -> int:
        """Frames from 0 that have at least one output."""
        nz = np.flatnonzero(self._count == 0)
        return len(self._count) if nz.size == 0 else int(nz[0])

    def stream(self) -> np.ndarray:
        """The averaged stream over the covered frames."""
        n = self.covered
        return self._sum[:n] / self._count[:n]


class WindowBuffer:
    """Collects face crops and says when a window of ``frames`` is due (every ``stride``)."""

    def __init__(self, frames: int, stride: int) -> None:
        if not 1 <= stride <= frames:
            msg = f"window stride must be in 1..{frames} frames, got {stride}"
            raise ConfigError(msg)
        self.frames, self.stride = frames, stride
        self._crops: list[np.ndarray] = []
        self._seen = 0

    def push(self, crop: np.ndarray) -> tuple[int, np.ndarray] | None:
        """Add a crop; return ``(start_frame, window)`` when a window is complete."""
        self._crops.append(crop)
        self._seen += 1
        if len(self._crops) > self.frames:
            self._crops.pop(0)
        start = self._seen - self.frames
        if start >= 0 and start % self.stride == 0:
            return start, np.stack(self._crops)
        return None
