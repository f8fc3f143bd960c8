"""Seeded synthetic rPPG videos with exact ground truth (docs/methods.md §10) [R].

Why: PURE and UBFC-rPPG cannot be downloaded here, yet the pipeline (loaders, preprocessing, rPPG
networks, HR metrics) needs videos whose pulse is known exactly. A real face photo
(:mod:`tinyprune.data.faces`) is modulated per pixel and colour by a pulse waveform
(:mod:`tinyprune.data.pulse`):

``I_k(x,t) = L(t) l_k(t) [rho_k(x) (1 - a s_k m(x) p(t - tau(x)))] + noise``

with the PBV signature ``s = (0.33, 0.77, 0.53) / 0.77``, depth ``a`` on green, pulsatility map
``m``, spatial delay ``tau``. Sign [R]: more blood absorbs more light, so skin gets *darker* when
the label (a pleth, positive = more blood volume) rises, as in real cameras; docs/methods.md
writes ``+``.
Specular highlights and the ``talking`` preset are not modelled.

Nuisance presets (combinable): ``static``, ``translation_slow`` / ``translation_fast``
(7 % / 14 % of face height per second on average, sinusoidal so turn-arounds are smooth),
``rotation_small`` / ``rotation_medium`` (yaw +/-10 / +/-20 deg as horizontal squeeze +
Lambertian shading),
``illumination`` (drift, ramped steps, colour-temperature drift, optional mains flicker) and
``camera`` (Poisson-Gaussian noise, optional gamma 2.2 and JPEG).
``crop`` mode renders face-centred ``crop x crop`` clips directly (face box = crop / 1.5).
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from tinyprune.data import pure, ubfc
from tinyprune.data.faces import FaceTemplate, face_template
from tinyprune.data.pulse import OXIMETER_HZ, Pulse, heartpy_pulse, synthesize_pulse
from tinyprune.errors import ConfigError

NUISANCES = (
    "static",
    "translation_slow",
    "translation_fast",
    "rotation_small",
    "rotation_medium",
    "illumination",
    "camera",
)
PBV_SIGNATURE = (0.33, 0.77, 0.53)


@dataclass(frozen=True)
class SyntheticConfig:
    """All knobs of one synthetic video; ``None`` fields are drawn from the seeded RNG.

    Attributes:
        seed: Seed of every random choice (same seed -> identical bytes).
        duration_s: Video length in seconds.
        fs: Frame rate (Hz).
        frame_size: ``(H, W)`` of full frames (ignored in crop mode).
        face_px: Face box side in full frames (ignored in crop mode).
        crop: If set, render ``crop x crop`` face-centred clips instead of full frames.
        face: ``"astronaut"`` or ``"lfw:<k>"``.
        skin_tone: 0 light .. 1 dark (lfw faces only); ``None`` draws ``U(0, 1)``.
        pulse: ``"synthetic"`` or ``"heartpy:<k>"`` (real contact PPG, k in 0..2).
        pulse_start_s: Offset into the heartpy recording.
        hr_bpm, hr_drift_bpm: Mean HR and drift amplitude (synthetic pulse only).
        rsa, respiration: Enable RSA/jitter and respiratory modulation.
        amplitude: Pulsatile AC/DC depth ``a`` on green.
        max_delay_s: Largest spatial pulse delay ``tau`` (forehead 0 -> chin max).
        label_delay_s: Delay of the label relative to the face pulse (finger transit time).
        nuisances: Preset names (see ``NUISANCES``).
        shot_noise_dn, read_noise_dn: Camera noise at mid-grey (``camera`` preset).
        gamma: Apply gamma 2.2 encoding (``camera`` preset).
        jpeg_quality: If set, JPEG-compress each frame (``camera`` preset) to show its damage.
        flicker_hz: Mains flicker frequency (``illumination`` preset), 0 = none.
    """

    seed: int = 0
    duration_s: float = 10.0
    fs: float = 30.0
    frame_size: tuple[int, int] = (120, 160)
    face_px: int = 48
    crop: int | None = None
    face: str = "astronaut"
    skin_tone: float | None = None
    pulse: str = "synthetic"
    pulse_start_s: float = 0.0
    hr_bpm: float | None = None
    hr_drift_bpm: float | None = None
    rsa: bool = True
    respiration: bool = True
    amplitude: float = 0.003
    max_delay_s: float = 0.03
    label_delay_s: float = 0.0
    nuisances: tuple[str, ...] = ("static",)
    shot_noise_dn: float = 1.5
    read_noise_dn: float = 1.0
    gamma: bool = False
    jpeg_quality: int | None = None
    flicker_hz: float = 0.0

    def __post_init__(self) -> None:
        bad = [n for n in self.nuisances if n not in NUISANCES]
        if bad:
            msg = f"unknown nuisance preset(s) {bad}; expected some of: {', '.join(NUISANCES)}"
            raise ConfigError(msg)
        if not (self.duration_s > 0 and self.fs > 0):
            msg = f"duration_s and fs must be > 0, got {self.duration_s!r} and {self.fs!r}"
            raise ConfigError(msg)
        if self.crop is not None and self.crop < 8:
            msg = f"crop must be >= 8 pixels, got {self.crop}"
            raise ConfigError(msg)
        if not 0 <= self.amplitude < 0.5:
            msg = f"amplitude must be in [0, 0.5), got {self.amplitude!r} (typical 0.001-0.005)"
            raise ConfigError(msg)
        if self.pulse != "synthetic" and not (
            self.pulse.startswith("heartpy:") and self.pulse[8:] in ("0", "1", "2")
        ):
            msg = f"unknown pulse source {self.pulse!r}; expected 'synthetic' or 'heartpy:0|1|2'"
            raise ConfigError(msg)


@dataclass(frozen=True)
class SyntheticVideo:
    """One rendered video and its ground truth.

    Attributes:
        frames: ``uint8 [T, H, W, 3]`` RGB.
        fs: Frame rate.
        bvp: Label pulse at the frame times ``[T]``.
        bvp_60hz: Label pulse at 60 Hz (the "oximeter").
        hr: Instantaneous HR (bpm) at the frame times ``[T]``.
        hr_mean: Mean beat rate over the video (bpm).
        face_box: ``(row, col, height, width)`` of the face in frame 0.
        skin_mask: ``bool [H, W]`` pixels with pulsatility > 0.5 in frame 0.
        metadata: Config, drawn parameters and derived values (JSON-serialisable).
    """

    frames: np.ndarray
    fs: float
    bvp: np.ndarray
    bvp_60hz: np.ndarray
    hr: np.ndarray
    hr_mean: float
    face_box: tuple[int, int, int, int]
    skin_mask: np.ndarray
    metadata: dict[str, Any] = field(repr=False)

    def metadata_json(self) -> str:
        """Metadata as a JSON document."""
        return json.dumps(self.metadata, indent=2, sort_keys=True)


def generate(cfg: SyntheticConfig) -> SyntheticVideo:
    """Render the video described by ``cfg`` (deterministic in ``cfg.seed``)."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(5)]
    rng_pulse, rng_face, rng_bg, rng_light, rng_cam = streams
    tone = float(rng_face.uniform(0, 1)) if cfg.skin_tone is None else cfg.skin_tone
    size, face_px = _geometry(cfg)
    tpl = face_template(cfg.face, tone).scaled(face_px)
    pulse = _make_pulse(cfg, rng_pulse)
    n = int(round(cfg.duration_s * cfg.fs))
    t = np.arange(n) / cfg.fs
    motion = _motion(cfg, t, tpl, size)
    light = _illumination(cfg, t, rng_light)
    bg = _background(size, rng_bg)
    levels = _delay_levels(pulse, t, cfg.max_delay_s)
    frames = np.empty((n, size[0], size[1], 3), np.uint8)
    for i in range(n):
        img = _render_frame(cfg, tpl, bg, levels[i], motion[i]) * light[i]
        frames[i] = _camera(cfg, img, rng_cam) if "camera" in cfg.nuisances else _quantise(img)
    t60 = np.arange(int(cfg.duration_s * OXIMETER_HZ)) / OXIMETER_HZ
    box = _frame_box(tpl, motion[0], size)
    meta = {
        "config": dataclasses.asdict(cfg),
        "pulse": pulse.params,
        "skin_tone": tone,
        "frame_size": list(size),
        "face_px": face_px,
        "face_box": list(box),
        "hr_mean_bpm": pulse.mean_hr(0.0, cfg.duration_s),
    }
    return SyntheticVideo(
        frames,
        cfg.fs,
        pulse.at(t - cfg.label_delay_s).astype(np.float32),
        pulse.at(t60 - cfg.label_delay_s).astype(np.float32),
        pulse.hr_at(t).astype(np.float32),
        pulse.mean_hr(0.0, cfg.duration_s),
        box,
        _skin_mask(tpl, motion[0], size),
        meta,
    )


def _geometry(cfg: SyntheticConfig) -> tuple[tuple[int, int], int]:
    if cfg.crop is not None:
        return (cfg.crop, cfg.crop), max(4, round(cfg.crop / 1.5))
    h, w = cfg.frame_size
    if cfg.face_px < 8 or cfg.face_px * 1.5 > min(h, w):
        msg = (
            f"face_px={cfg.face_px} does not fit frame_size={cfg.frame_size}: need "
            f"8 <= face_px <= min(H, W) / 1.5"
        )
        raise ConfigError(msg)
    return (h, w), cfg.face_px


def _make_pulse(cfg: SyntheticConfig, rng: np.random.Generator) -> Pulse:
    if cfg.pulse == "synthetic":
        return synthesize_pulse(
            rng, cfg.duration_s + 1.0, cfg.hr_bpm, cfg.hr_drift_bpm, cfg.rsa, cfg.respiration
        )
    return heartpy_pulse(int(cfg.pulse[8:]), cfg.duration_s + 1.0, cfg.pulse_start_s)


def _delay_levels(pulse: Pulse, t: np.ndarray, max_delay: float) -> np.ndarray:
    """Pulse at each frame for 16 delay levels spanning [0, max_delay]: ``[T, 16]``."""
    delays = np.linspace(0.0, max_delay, 16)
    return pulse.at(t[:, None] - delays[None, :])


def _motion(
    cfg: SyntheticConfig, t: np.ndarray, tpl: FaceTemplate, size: tuple[int, int]
) -> np.ndarray:
    """Per frame ``(dy, dx, yaw_rad)`` of the face relative to the frame centre."""
    out = np.zeros((t.size, 3))
    face = tpl.face_box[2]
    speed = 0.14 if "translation_fast" in cfg.nuisances else 0.07
    if {"translation_slow", "translation_fast"} & set(cfg.nuisances):
        amp = max(1.0, min(0.5 * face, (size[1] - 1.5 * face) / 2))
        omega = speed * face * np.pi / (2 * amp)  # mean |velocity| = speed * face height
        out[:, 1] = amp * np.sin(omega * t)
    yaw = 20.0 if "rotation_medium" in cfg.nuisances else 10.0
    if {"rotation_small", "rotation_medium"} & set(cfg.nuisances):
        out[:, 2] = np.deg2rad(yaw) * np.sin(2 * np.pi * t / 6.0)
    return out


def _illumination(cfg: SyntheticConfig, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per frame, per channel gain ``L(t) l_k(t)``: ``[T, 3]`` (ones without the preset)."""
    if "illumination" not in cfg.nuisances:
        return np.ones((t.size, 3))
    level = 1 + 0.15 * np.sin(2 * np.pi * t / rng.uniform(60, 120) + rng.uniform(0, 2 * np.pi))
    for when in np.cumsum(rng.exponential(10.0, size=int(t[-1] / 5) + 2)):
        level += rng.choice([-0.1, 0.1]) * np.clip((t - when) / 0.5, 0, 1)
    if cfg.flicker_hz > 0:
        level *= 1 + 0.02 * np.cos(2 * np.pi * cfg.flicker_hz * t)
    tint = rng.uniform(0.01, 0.03) * np.sin(2 * np.pi * t / rng.uniform(30, 90))
    colour = np.stack([1 + tint, np.ones_like(t), 1 - tint], axis=1)
    return np.clip(level, 0.3, 1.7)[:, None] * colour


def _background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Static textured background: a base colour times low-pass noise (+/- ~8 %)."""
    base = rng.uniform(0.3, 0.6) * np.array([1.0, rng.uniform(0.9, 1.1), rng.uniform(0.85, 1.15)])
    noise = ndimage.gaussian_filter(rng.normal(size=(*size, 3)), (size[0] / 20, size[1] / 20, 0))
    noise *= 0.08 / max(float(np.abs(noise).max()), 1e-9)
    return np.clip(base * (1 + noise), 0, 1)


def _render_frame(
    cfg: SyntheticConfig, tpl: FaceTemplate, bg: np.ndarray, levels: np.ndarray, motion: np.ndarray
) -> np.ndarray:
    """Composite the pulse-modulated face onto the background at its pose: ``[H, W, 3]``."""
    sig = np.asarray(PBV_SIGNATURE) / PBV_SIGNATURE[1]
    idx = np.clip(np.rint(tpl.delay_frac * (levels.size - 1)).astype(int), 0, levels.size - 1)
    depth = cfg.amplitude * tpl.pulsatility * levels[idx]
    face = tpl.albedo * (1 - depth[..., None] * sig)
    alpha = tpl.alpha
    if motion[2] != 0.0:
        face, alpha = _yaw(face, alpha, motion[2])
    return _composite(bg, face, alpha, _frame_offset(tpl, motion, bg.shape[:2]))


def _frame_offset(tpl: FaceTemplate, motion: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Float top-left position of the template in the frame (face box centred + motion)."""
    r, c, h, w = tpl.face_box
    return np.array([size[0] / 2 - (r + h / 2) + motion[0], size[1] / 2 - (c + w / 2) + motion[1]])


def _yaw(face: np.ndarray, alpha: np.ndarray, yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """Approximate a head turn: horizontal squeeze by cos(yaw) and a Lambertian shading ramp."""
    h, w = alpha.shape
    cols = (np.arange(w) - w / 2) / np.cos(yaw) + w / 2
    coords = np.stack(np.meshgrid(np.arange(h), cols, indexing="ij")).astype(np.float64)
    shade = 1 + 0.4 * np.sin(yaw) * (np.arange(w) - w / 2) / w
    out = (
        np.stack(
            [ndimage.map_coordinates(face[..., k], coords, order=1, cval=0.0) for k in range(3)],
            axis=-1,
        )
        * shade[None, :, None]
    )
    return out, ndimage.map_coordinates(alpha, coords, order=1, cval=0.0)


def _composite(
    bg: np.ndarray, face: np.ndarray, alpha: np.ndarray, offset: np.ndarray
) -> np.ndarray:
    """Alpha-blend ``face`` onto ``bg`` at a sub-pixel ``offset`` (rows, cols), clipped."""
    base = np.floor(offset).astype(int)
    frac = offset - base
    if np.any(frac != 0):
        face = ndimage.shift(face, (*frac, 0), order=1, mode="nearest")
        alpha = ndimage.shift(alpha, frac, order=1, cval=0.0)
    out = bg.copy()
    h, w = alpha.shape
    r0, c0 = max(base[0], 0), max(base[1], 0)
    r1, c1 = min(base[0] + h, bg.shape[0]), min(base[1] + w, bg.shape[1])
    if r1 <= r0 or c1 <= c0:
        return out
    a = alpha[r0 - base[0] : r1 - base[0], c0 - base[1] : c1 - base[1], None]
    f = face[r0 - base[0] : r1 - base[0], c0 - base[1] : c1 - base[1]]
    out[r0:r1, c0:c1] = bg[r0:r1, c0:c1] * (1 - a) + f * a
    return out


def _frame_box(
    tpl: FaceTemplate, motion: np.ndarray, size: tuple[int, int]
) -> tuple[int, int, int, int]:
    off = np.rint(_frame_offset(tpl, motion, size)).astype(int)
    r, c, h, w = tpl.face_box
    return (int(off[0] + r), int(off[1] + c), h, w)


def _skin_mask(tpl: FaceTemplate, motion: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    m = _composite(
        np.zeros((*size, 3)),
        np.repeat(tpl.pulsatility[..., None], 3, axis=2),
        np.ones_like(tpl.alpha),
        _frame_offset(tpl, motion, size),
    )
    return m[..., 1] > 0.5


def _quantise(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _camera(cfg: SyntheticConfig, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson-Gaussian sensor noise in DN, optional gamma 2.2 and JPEG, uint8 quantisation."""
    dn = np.clip(img, 0, 1) * 255.0
    gain = cfg.shot_noise_dn**2 / 128.0  # DN per electron: shot std = shot_noise_dn at mid-grey
    dn = rng.poisson(dn / gain) * gain + rng.normal(0.0, cfg.read_noise_dn, dn.shape)
    if cfg.gamma:
        dn = 255.0 * (np.clip(dn, 0, 255) / 255.0) ** (1 / 2.2)
    out = np.clip(np.rint(dn), 0, 255).astype(np.uint8)
    if cfg.jpeg_quality is not None:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=cfg.jpeg_quality)
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return out


def write_pure(video: SyntheticVideo, root: str | Path, ss: int = 1, tt: int = 1) -> Path:
    """Write ``video`` as PURE sequence ``ss-tt`` under ``root`` (PNG frames + JSON, §8.1)."""
    hr60 = np.interp(
        np.arange(video.bvp_60hz.size) / OXIMETER_HZ, np.arange(video.hr.size) / video.fs, video.hr
    )
    return pure.write_sequence(root, ss, tt, video.frames, video.fs, video.bvp_60hz, hr60)


def write_ubfc(video: SyntheticVideo, root: str | Path, subject_id: int = 1) -> Path:
    """Write ``video`` as UBFC-rPPG ``subject<N>`` under ``root`` (vid.avi + ground_truth.txt)."""
    return ubfc.write_subject(root, subject_id, video.frames, video.fs, video.bvp, video.hr)
