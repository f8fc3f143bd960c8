"""Real face templates for the synthetic rPPG generator (docs/methods.md §10.2).

Why: a drawn ellipse face is too easy; the generator modulates a *real* face photo that ships inside
scikit-image, so detectors, crops and networks see real skin texture, eyes, hair and shading.

* ``astronaut``: ``skimage.data.astronaut()``; its face box (row 69, col 177, 90x90, found by the
  bundled LBP cascade) is the reference; the template is the 180x180 region around it.
* ``lfw:<k>``: face ``k`` (0-99) of ``skimage.data.lfw_subset()`` (25x25 greyscale crops), tinted
  with a skin tone between docs/methods.md's light ``(0.75, 0.55, 0.45)`` and dark
  ``(0.35, 0.22, 0.16)``.

Region maps are drawn in face-box coordinates (v down, u across, both 0..1 over the box) [R]:
pulsatility ``m(x)`` is 1 on forehead/cheeks, 0.6 on nose and chin, 0 on eyes, brows, lips and
outside the skin ellipse, then smoothed; ``delay_frac`` grows from forehead (0) to chin (1) so that
the pulse arrives later lower on the face (``tau(x)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage import data as skdata
from skimage.transform import resize

from tinyprune.errors import ConfigError

ASTRONAUT_FACE = (69, 177, 90, 90)  # row, col, height, width
LIGHT_SKIN = np.array([0.75, 0.55, 0.45])
DARK_SKIN = np.array([0.35, 0.22, 0.16])


@dataclass(frozen=True)
class FaceTemplate:
    """A face image with its region maps; the face box sits in the middle half of the template.

    Attributes:
        albedo: ``[h, w, 3]`` reflectance in [0, 1].
        alpha: ``[h, w]`` head (1) vs background (0), soft edged.
        pulsatility: ``[h, w]`` pulse modulation depth map ``m(x)``.
        delay_frac: ``[h, w]`` pulse delay as a fraction of the maximum delay.
        face_box: ``(row, col, height, width)`` of the face inside the template.
        name: Which face this is.
    """

    albedo: np.ndarray
    alpha: np.ndarray
    pulsatility: np.ndarray
    delay_frac: np.ndarray
    face_box: tuple[int, int, int, int]
    name: str

    def scaled(self, face_px: int) -> FaceTemplate:
        """The template resized so that its face box is ``face_px`` pixels high."""
        if face_px < 4:
            msg = f"face size must be >= 4 pixels, got {face_px}"
            raise ConfigError(msg)
        f = face_px / self.face_box[2]
        h, w = round(self.albedo.shape[0] * f), round(self.albedo.shape[1] * f)

        def rs(x: np.ndarray) -> np.ndarray:
            return resize(x, (h, w), order=1, anti_aliasing=f < 1, preserve_range=True)

        box = tuple(round(v * f) for v in self.face_box)
        return FaceTemplate(
            np.clip(rs(self.albedo), 0, 1),
            np.clip(rs(self.alpha), 0, 1),
            np.clip(rs(self.pulsatility), 0, 1),
            rs(self.delay_frac),
            (box[0], box[1], box[2], box[3]),
            self.name,
        )


def face_template(name: str, skin_tone: float = 0.3) -> FaceTemplate:
    """Build the template ``astronaut`` or ``lfw:<k>``.

    Args:
        name: ``"astronaut"`` or ``"lfw:<k>"`` with ``k`` in 0..99.
        skin_tone: 0 (light) .. 1 (dark); used for the greyscale lfw faces only.

    Raises:
        ConfigError: unknown face name or index out of range.
    """
    if name == "astronaut":
        return _astronaut()
    if name.startswith("lfw:") and name[4:].isdigit() and int(name[4:]) < 100:
        if not 0.0 <= skin_tone <= 1.0:
            msg = f"skin_tone must be in [0, 1], got {skin_tone!r}"
            raise ConfigError(msg)
        return _lfw(int(name[4:]), skin_tone)
    msg = f"unknown face {name!r}; expected 'astronaut' or 'lfw:<k>' with k in 0..99"
    raise ConfigError(msg)


def _astronaut() -> FaceTemplate:
    r, c, h, w = ASTRONAUT_FACE
    img = skdata.astronaut()[r - h // 2 : r + h + h // 2, c - w // 2 : c + w + w // 2]
    albedo = img.astype(np.float64) / 255.0
    box = (h // 2, w // 2, h, w)
    maps = _region_maps(albedo.shape[:2], box, head=(0.35, 0.5, 0.82, 0.64))
    return FaceTemplate(albedo, *maps, box, "astronaut")


def _lfw(k: int, skin_tone: float) -> FaceTemplate:
    faces = skdata.lfw_subset()[:100]
    grey = np.pad(faces[k], 12, mode="edge")
    tone = (1 - skin_tone) * LIGHT_SKIN + skin_tone * DARK_SKIN
    albedo = np.clip(tone[None, None, :] * (0.45 + 0.9 * grey[..., None]), 0, 1)
    box = (12, 12, 25, 25)
    maps = _region_maps(grey.shape, box, head=(0.45, 0.5, 0.62, 0.55))
    return FaceTemplate(albedo, *maps, box, f"lfw:{k}")


def _ellipse(
    v: np.ndarray, u: np.ndarray, cv: float, cu: float, rv: float, ru: float
) -> np.ndarray:
    return ((v - cv) / rv) ** 2 + ((u - cu) / ru) ** 2 <= 1.0


def _region_maps(
    shape: tuple[int, ...], box: tuple[int, int, int, int], head: tuple[float, float, float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alpha, pulsatility and delay maps in template pixels from face-box geometry."""
    r, c, h, w = box
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    v, u = (rows + 0.5 - r) / h, (cols + 0.5 - c) / w
    sigma = max(h / 40, 0.6)
    alpha = ndimage.gaussian_filter(_ellipse(v, u, *head).astype(np.float64), sigma)
    m = _ellipse(v, u, 0.45, 0.5, 0.62, 0.45).astype(np.float64)
    m[(np.abs(u - 0.5) < 0.1) & (v > 0.35) & (v < 0.7)] *= 0.6  # nose
    m[v > 0.88] *= 0.6  # chin
    for cu in (0.28, 0.72):
        m[_ellipse(v, u, 0.33, cu, 0.08, 0.13)] = 0.0  # eyes
        m[_ellipse(v, u, 0.2, cu, 0.05, 0.15)] = 0.0  # brows
    m[_ellipse(v, u, 0.8, 0.5, 0.08, 0.2)] = 0.0  # lips
    m = ndimage.gaussian_filter(m, sigma) * alpha
    delay = np.clip((v + 0.2) / 1.3, 0.0, 1.0)
    return alpha, m, delay
