"""scikit-learn's handwritten digits: real data that ships inside an installed package.

Why: tests and demos need a real classification set without any download. ``load_digits`` holds
1,797 8x8 greyscale digits (values 0..16, 10 classes); they can be upscaled (bilinear) to 16x16 or
28x28 for networks that need a larger input. The train/test split is stratified and seeded.
"""

from __future__ import annotations

import numpy as np
from skimage.transform import resize
from sklearn.datasets import load_digits as _sk_load_digits
from sklearn.model_selection import train_test_split

from tinyprune.errors import ConfigError

SIZES = (8, 16, 28)


def load_digits(
    size: int = 8, test_fraction: float = 0.2, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Digits as float32 ``[N, 1, size, size]`` in [0, 1] with int64 labels, split by ``seed``.

    Args:
        size: Side of the images: 8 (native), 16 or 28 (bilinear upscaling).
        test_fraction: Share of samples in the test split (stratified by class).
        seed: Seed of the split.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``.

    Raises:
        ConfigError: an unsupported size or a fraction outside (0, 1).
    """
    if size not in SIZES:
        msg = f"digits size must be one of {SIZES}, got {size!r}"
        raise ConfigError(msg)
    if not 0.0 < test_fraction < 1.0:
        msg = f"test_fraction must be in (0, 1), got {test_fraction!r}"
        raise ConfigError(msg)
    bunch = _sk_load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    if size != 8:
        images = resize(
            images, (images.shape[0], size, size), order=1, anti_aliasing=False, preserve_range=True
        ).astype(np.float32)
    x = images[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return (x_tr, y_tr), (x_te, y_te)
