"""Calibration data: read, check and lay out the samples int8 quantization is calibrated on.

CALIB is a ``.npy`` of float32 samples in the model's PyTorch layout, ``(N, C, H, W)`` or
``(N, C, T, H, W)``. The sample shape fixes the export shape (batch 1). The converted model is
channels-last, so the samples are transposed to NHWC / NDHWC for TensorFlow and the runtimes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tinyprune.errors import ConfigError

log = logging.getLogger(__name__)

#: Fewer calibration samples than this get a warning (int8 ranges from too little data).
MIN_CALIB_SAMPLES = 16


def load_calibration(path: str | Path) -> np.ndarray:
    """Read a ``.npy`` calibration file without unpickling and check it.

    See :func:`check_calibration`.
    """
    from tinyprune.safe_load import load_npy

    p = Path(path)
    return check_calibration(load_npy(p, what="calibration"), source=str(p))


def check_calibration(data: np.ndarray, *, source: str = "calibration data") -> np.ndarray:
    """Check rank, emptiness and finiteness; return a float32 C-contiguous copy."""
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "fiu":
        msg = f"{source}: expected a numeric array, got {getattr(data, 'dtype', type(data))}"
        raise ConfigError(msg)
    if data.ndim not in (2, 3, 4, 5):
        msg = (
            f"{source}: expected samples shaped (N, C, H, W) or (N, C, T, H, W), "
            f"got an array of shape {data.shape}"
        )
        raise ConfigError(msg)
    if data.shape[0] == 0 or data.size == 0:
        msg = (
            f"{source}: the calibration set is empty (shape {data.shape}); give at least one sample"
        )
        raise ConfigError(msg)
    _warn_dtype_and_count(data, source)
    data = np.ascontiguousarray(data, dtype=np.float32)
    bad = ~np.isfinite(data)
    if bad.any():
        first = np.argwhere(bad)[0]
        msg = (
            f"{source}: {int(bad.sum())} non-finite values (NaN/Inf), first at sample {first[0]} "
            f"index {tuple(int(i) for i in first[1:])}; clean the data before calibrating"
        )
        raise ConfigError(msg)
    return data


def _warn_dtype_and_count(data: np.ndarray, source: str) -> None:
    """Warn on integer samples (cast to float32 as they are) and on tiny calibration sets."""
    if data.dtype.kind in "iu":
        log.warning(
            "%s: calibration samples are %s, not float; they are cast to float32 unscaled "
            "(divide by 255 or normalise them first if the model was trained on scaled inputs)",
            source,
            data.dtype,
        )
    if len(data) < MIN_CALIB_SAMPLES:
        log.warning(
            "%s: only %d calibration sample(s); int8 ranges calibrated on fewer than %d samples "
            "are often too narrow for real inputs (give a few hundred representative samples)",
            source,
            len(data),
            MIN_CALIB_SAMPLES,
        )


def check_against_model(
    data: np.ndarray, input_shape: tuple[int, ...] | None, *, model: str
) -> None:
    """Raise if the model declares a per-sample input shape that the samples do not have."""
    if input_shape is not None and tuple(data.shape[1:]) != tuple(input_shape):
        msg = (
            f"calibration samples have shape {tuple(data.shape[1:])} but {model} expects "
            f"{tuple(input_shape)} per sample (PyTorch layout, no batch axis)"
        )
        raise ConfigError(msg)


def to_channels_last(data: np.ndarray) -> np.ndarray:
    """(N, C, ...spatial) -> (N, ...spatial, C), the layout of the converted model."""
    if data.ndim < 3:
        return data
    axes = (0, *range(2, data.ndim), 1)
    return np.ascontiguousarray(np.transpose(data, axes))


def to_channels_first(data: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_channels_last`."""
    if data.ndim < 3:
        return data
    axes = (0, data.ndim - 1, *range(1, data.ndim - 1))
    return np.ascontiguousarray(np.transpose(data, axes))
