"""The model's input contract, read from its run/export folder (torch-free).

Why: an int8 ``.tflite`` says only its tensor shape; the runtime must feed it exactly what the net
saw in training (frames per window, face size, which normalisations in which channel order, frame
layout, frame rate, label type, crop rule). The lead's export records that as
``report.json["preprocessing"]`` (and ``summary.json["preprocessing"]`` in training runs);
:func:`load_contract` reads it and, when it is absent, infers what the tensor shape allows with a
warning naming what was assumed.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tinyprune.errors import ConfigError

DATA_TYPES = ("Raw", "DiffNormalized", "Standardized")  # as tinyprune.data.preprocess
LAYOUTS = ("stacked", "clip", "image")
TASKS = ("rppg", "classification")


@dataclass(frozen=True)
class PreprocessingContract:
    """What the model's input is made of.

    Attributes:
        task: ``rppg`` (BVP out) or ``classification`` (logits out).
        frames: Frames per window (1 for images).
        height: Face (or image) height in pixels.
        width: Face (or image) width in pixels.
        channels: Input channels (3 per data type for rPPG).
        data_types: rPPG input types, channels concatenated in this order.
        layout: ``stacked`` (frames stacked along the height: NCHW ``(C, T*H, W)``, NHWC
            ``(T*H, W, C)``), ``clip`` (NCDHW ``(C, T, H, W)``, NDHWC ``(T, H, W, C)``) or
            ``image``.
        fs: Frame rate the net was trained at (Hz).
        label_type: ``Raw``, ``DiffNormalized`` (the net outputs the pulse's first difference)
            or ``Standardized``.
        enlarge: Face box enlargement around its centre (rPPG-Toolbox ``LARGE_BOX_COEF``).
        detect: Crop the detected face (``False``: the centred square of the frame).
        labels: Class names (classification), index order.
        mean: Per-channel mean subtracted from ``pixel / 255`` (classification; empty: none).
        std: Per-channel std dividing it (classification; empty: none).
    """

    task: str = "rppg"
    frames: int = 10
    height: int = 36
    width: int = 36
    channels: int = 6
    data_types: tuple[str, ...] = ("DiffNormalized", "Standardized")
    layout: str = "stacked"
    fs: float = 30.0
    label_type: str = "DiffNormalized"
    enlarge: float = 1.5
    detect: bool = True
    labels: tuple[str, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.task not in TASKS:
            problems.append(f"task {self.task!r} not one of {TASKS}")
        if self.layout not in LAYOUTS:
            problems.append(f"layout {self.layout!r} not one of {LAYOUTS}")
        if min(self.frames, self.height, self.width, self.channels) < 1 or not self.fs > 0:
            problems.append("frames, height, width, channels and fs must be positive")
        if self.task == "rppg":
            bad = [d for d in (*self.data_types, self.label_type) if d not in DATA_TYPES]
            if bad or not self.data_types:
                problems.append(f"data/label types {bad or 'empty'} not in {DATA_TYPES}")
            elif 3 * len(self.data_types) != self.channels:
                problems.append(
                    f"{len(self.data_types)} data type(s) make {3 * len(self.data_types)} "
                    f"channels, not {self.channels}"
                )
        if problems:
            msg = f"invalid preprocessing contract: {'; '.join(problems)}"
            raise ConfigError(msg)

    def input_shape_nhwc(self) -> tuple[int, ...]:
        """The channels-last input shape without the batch axis."""
        if self.layout == "stacked":
            return (self.frames * self.height, self.width, self.channels)
        if self.layout == "clip":
            return (self.frames, self.height, self.width, self.channels)
        return (self.height, self.width, self.channels)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Any) -> PreprocessingContract:
        """Build from a dict such as ``report.json["preprocessing"]``.

        Raises:
            ConfigError: not a mapping, unknown keys, or invalid values.
        """
        if not isinstance(d, dict):
            msg = f"the preprocessing contract must be a JSON object, got {type(d).__name__}"
            raise ConfigError(msg)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            msg = f"unknown preprocessing contract key(s) {unknown}; known: {sorted(known)}"
            raise ConfigError(msg)
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        try:
            return cls(**kw)
        except TypeError as e:
            msg = f"malformed preprocessing contract {d!r}: {e}"
            raise ConfigError(msg) from e


def infer_contract(input_shape: tuple[int, ...]) -> PreprocessingContract:
    """Guess the contract from an int8 model's channels-last input shape (batch included).

    Raises:
        ConfigError: a shape no rPPG or image layout explains.
    """
    shape = tuple(int(s) for s in input_shape[1:])
    if len(shape) == 4:
        t, h, w, c = shape
        return _rppg_guess(t, h, w, c, "clip")
    if len(shape) == 3:
        th, w, c = shape
        if c in (3, 6) and th > w and th % w == 0:
            return _rppg_guess(th // w, w, w, c, "stacked")
        return PreprocessingContract(
            task="classification",
            frames=1,
            height=th,
            width=w,
            channels=c,
            data_types=(),
            layout="image",
            label_type="Raw",
        )
    msg = f"cannot infer a preprocessing contract from the input shape {input_shape}"
    raise ConfigError(msg)


def _rppg_guess(t: int, h: int, w: int, c: int, layout: str) -> PreprocessingContract:
    types = ("DiffNormalized", "Standardized") if c == 6 else ("DiffNormalized",)
    if c not in (3, 6):
        msg = f"an rPPG input with {c} channels has no known data types (expected 3 or 6)"
        raise ConfigError(msg)
    return PreprocessingContract(
        frames=t, height=h, width=w, channels=c, data_types=types, layout=layout
    )


def read_recorded(folder: Path) -> PreprocessingContract | None:
    """The contract recorded in ``report.json`` or ``summary.json`` of ``folder``, if any."""
    for name in ("report.json", "summary.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            msg = f"{path} is not valid JSON ({e}); re-run the export or pass the .tflite alone"
            raise ConfigError(msg) from e
        if isinstance(doc, dict) and doc.get("preprocessing") is not None:
            return PreprocessingContract.from_dict(doc["preprocessing"])
    return None


def read_recorded_run(run: Path) -> PreprocessingContract | None:
    """The contract a training run records in its ``summary.json`` (None: none there)."""
    path = run / "summary.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        msg = f"{path} is not valid JSON ({e}); re-run the job"
        raise ConfigError(msg) from e
    found = doc.get("preprocessing") if isinstance(doc, dict) else None
    return None if found is None else PreprocessingContract.from_dict(found)


def _check_run_agrees(
    export: PreprocessingContract | None, run: PreprocessingContract | None, where: Path, rp: Path
) -> None:
    if export is None or run is None or export == run:
        return
    a, b = export.to_dict(), run.to_dict()
    diff = ", ".join(f"{k}: {a[k]!r} vs {b[k]!r}" for k in a if a[k] != b[k])
    msg = (
        f"the export {where} and the run {rp} record different preprocessing contracts "
        f"({diff}); re-export the run (tinyprune export {rp} --calib-from {rp} ...)"
    )
    raise ConfigError(msg)


def load_contract(tflite: Path, input_shape: tuple[int, ...]) -> PreprocessingContract:
    """The recorded contract beside ``tflite``, checked against the model's input shape.

    Falls back to :func:`infer_contract` with a warning when nothing is recorded.

    Raises:
        ConfigError: the recorded contract disagrees with the model's input shape.
    """
    contract = read_recorded(tflite.parent)
    run = tflite.parent.parent
    if not (tflite.parent / "summary.json").is_file() and (run / "summary.json").is_file():
        _check_run_agrees(contract, read_recorded_run(run), tflite.parent, run)
        contract = contract or read_recorded_run(run)
    if contract is None:
        contract = infer_contract(input_shape)
        warnings.warn(
            f"no preprocessing contract in {tflite.parent} (report.json/summary.json "
            f"'preprocessing'); assumed from the input shape {tuple(input_shape)}: "
            f"{contract.to_dict()}",
            stacklevel=2,
        )
    if tuple(input_shape[1:]) != contract.input_shape_nhwc():
        msg = (
            f"{tflite} takes input {tuple(input_shape)} but its recorded contract describes "
            f"{contract.input_shape_nhwc()} per sample; re-export the model"
        )
        raise ConfigError(msg)
    return contract
