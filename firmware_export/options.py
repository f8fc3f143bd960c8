"""The knobs of one export, each default defined once (the CLI reads its defaults from here).

Torch- and TensorFlow-free, so ``tinyprune --help`` stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tinyprune.errors import ConfigError

__all__ = ["DEFAULT_TARGET", "ExportOptions"]

#: Device profile of an export that names none (``tinyprune export``, ``firmware_export.export``).
DEFAULT_TARGET = "cortex-m4"


@dataclass(frozen=True)
class ExportOptions:
    """Knobs of one export; defaults are what the CLI uses."""

    calib_cap: int = 512  # samples used for int8 calibration (all, up to this)
    verify_samples: int = 32  # samples run through every runtime for verification
    per_channel: bool = True
    tflm_tolerance_lsb: int = 0  # LiteRT reference kernels vs TFLM: bit-exact by default
    float_tolerance: float = 1e-3  # relative max-abs error torch vs ONNX vs TFLite float
    min_cosine: float = 0.90  # int8 vs float output cosine similarity floor
    # explicit extra on top of the computed arena (32-bit head + tail + CMSIS-NN scratch)
    arena_margin_fraction: float = 0.0
    arena_margin_min_bytes: int = 0
    memory_plan: str = "auto"  # auto | offline | online (firmware_export.arena_plan)
    # 3-D layers as exact 2-D ops, time as batch (firmware_export.rewrite_3d): auto = for TFLM
    # targets, and for LiteRT targets when it leaves no 3-D op; off = export them as they are
    rewrite_3d: str = "auto"
    # LiteRT targets: narrow stride-1 convolutions run on 2x2 pixel blocks (SpaceToDepth, a
    # convolution with 4x the channels, DepthToSpace; firmware_export.rewrite_onnx_s2d)
    space_to_depth: str = "auto"
    name: str | None = None  # C identifier stem; default: the model's name
    trust_model_code: bool = False  # load Keras models whose layers carry code (Lambda...)
    output: int | None = None  # export only this output of a multi-output model (--output)
    min_centred_cosine: float | None = None  # centred int8 vs float cosine floor (None: min_cosine)
    # the model's input contract (JSON form): report.json["preprocessing"] + a header block
    preprocessing: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        """Reject values that make no sense before any slow stage runs."""
        if self.calib_cap < 1 or self.verify_samples < 1:
            msg = (
                "calib_cap and verify_samples must be >= 1, "
                f"got {self.calib_cap}, {self.verify_samples}"
            )
            raise ConfigError(msg)
        finite = all(
            math.isfinite(v)
            for v in (self.float_tolerance, self.min_cosine, self.arena_margin_fraction)
        )
        if (
            not finite
            or self.tflm_tolerance_lsb < 0
            or self.float_tolerance <= 0
            or not 0 <= self.min_cosine <= 1
            or self.arena_margin_fraction < 0
        ):
            msg = (
                "tolerances must be finite and non-negative (float tolerance > 0, min cosine in "
                f"[0, 1], arena margin >= 0); got float tolerance {self.float_tolerance}, "
                f"min cosine {self.min_cosine}, TFLM tolerance {self.tflm_tolerance_lsb}, "
                f"arena margin {self.arena_margin_fraction}"
            )
            raise ConfigError(msg)
        if self.memory_plan not in ("auto", "offline", "online"):
            msg = f"memory_plan must be auto, offline or online, got {self.memory_plan!r}"
            raise ConfigError(msg)
        if self.rewrite_3d not in ("auto", "off"):
            msg = f"rewrite_3d must be auto or off, got {self.rewrite_3d!r}"
            raise ConfigError(msg)
        if self.space_to_depth not in ("auto", "off"):
            msg = f"space_to_depth must be auto or off, got {self.space_to_depth!r}"
            raise ConfigError(msg)
        if self.arena_margin_min_bytes < 0:
            msg = "the arena margin must be >= 0 (it is an extra on top of the computed arena)"
            raise ConfigError(msg)
        if self.min_centred_cosine is not None and not -1 <= self.min_centred_cosine <= 1:
            msg = f"min centred cosine must be in [-1, 1], got {self.min_centred_cosine}"
            raise ConfigError(msg)
        if self.output is not None and self.output < 0:
            msg = f"--output must be >= 0 (an output number), got {self.output}"
            raise ConfigError(msg)

    def rewrite_3d_mode(self, runtime: str) -> str:
        """How the 3-D rewrite applies on a runtime: ``off``, ``all`` (TFLM: every 3-D layer
        must be rewritten, or exit 4) or ``complete`` (LiteRT: only when none is left).
        """
        if self.rewrite_3d == "off":
            return "off"
        return "all" if runtime == "tflm" else "complete"
