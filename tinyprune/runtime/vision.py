"""``tinyprune infer`` on images for vision models: top-k labels from the int8 model.

Why: the same door (contract + LiteRT) serves classifiers: an image is resized to the contract's
size (area filter), scaled to [0, 1], normalised with the contract's mean/std when recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tinyprune.errors import ConfigError
from tinyprune.runtime.model import TfliteModel


def image_input(path: str | Path, model: TfliteModel) -> np.ndarray:
    """The model's float NHWC input (batch 1) for one image file.

    Raises:
        ConfigError: unreadable image.
    """
    import cv2

    c = model.contract
    flag = cv2.IMREAD_GRAYSCALE if c.channels == 1 else cv2.IMREAD_COLOR
    img = cv2.imread(str(path), flag)
    if img is None:
        msg = f"cannot read the image {path} (PNG, JPEG or BMP expected)"
        raise ConfigError(msg)
    img = cv2.resize(img, (c.width, c.height), interpolation=cv2.INTER_AREA)
    img = img[..., None] if c.channels == 1 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    x = img.astype(np.float32) / 255.0
    if c.mean:
        x = x - np.asarray(c.mean, np.float32)
    if c.std:
        x = x / np.asarray(c.std, np.float32)
    return x[None]


def classify_images(model: TfliteModel, paths: list[str], k: int = 5) -> list[dict[str, Any]]:
    """Top-``k`` labels and scores (dequantised logits/probabilities) per image."""
    if model.contract.task != "classification":
        msg = f"{model.path} is an rPPG model; give it --video, --camera, --frames or --data"
        raise ConfigError(msg)
    names = model.contract.labels
    out = []
    for p in paths:
        scores = model(image_input(p, model)).reshape(-1)
        top = np.argsort(-scores, kind="stable")[:k]
        out.append(
            {
                "image": str(p),
                "top": [
                    {
                        "index": int(i),
                        "label": names[i] if i < len(names) else str(int(i)),
                        "score": float(scores[i]),
                    }
                    for i in top
                ],
            }
        )
    return out
