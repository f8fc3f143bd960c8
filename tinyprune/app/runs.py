"""Run folders: what a train or prune job writes, and the checks before one starts.

A run folder holds ``model.pt2`` (a ``torch.export`` program that ``tinyprune export`` takes),
``checkpoint.pt`` (state_dict + model spec, loaded with ``weights_only=True``), ``calib.npy``
(int8 calibration samples from the training set), ``summary.json`` and ``config.toml`` (the
resolved configuration, which ``--config`` loads back).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tinyprune.config import to_toml
from tinyprune.errors import ConfigError
from tinyprune.fileio import atomic_path, write_text_atomic

log = logging.getLogger(__name__)


def _frame_stacked(data_shape: tuple[int, ...], model_shape: tuple[int, ...]) -> bool:
    """Clip data (C, T, H, W) for a frame-stacked 2-D rPPG net that takes (C, T*H, W)."""
    if len(data_shape) != 4 or len(model_shape) != 3:
        return False
    c, t, h, w = data_shape
    return model_shape == (c, t * h, w)


def check_compatible(model: nn.Module, bundle: Any, model_name: str, data_name: str) -> None:
    """Raise when model and data disagree on task or per-sample input shape.

    Clip data ``(C, T, H, W)`` suits a frame-stacked rPPG net taking ``(C, T*H, W)``: those nets
    accept 5-D clips in training, and :func:`to_model_layout` stacks the calibration samples.
    """
    shape = tuple(getattr(model, "input_shape", ()) or ())
    task = getattr(model, "task", bundle.task)
    if task != bundle.task:
        msg = (
            f"model {model_name} is a {task} model but data {data_name} is a {bundle.task} data set"
        )
        raise ConfigError(msg)
    data_shape = tuple(bundle.input_shape)
    if shape and data_shape != shape and not _frame_stacked(data_shape, shape):
        msg = (
            f"data {data_name} gives samples of shape {data_shape} but model "
            f"{model_name} expects {shape}; pick matching sizes (model kwargs or data options)"
            + _clip_hint(data_shape, shape)
        )
        raise ConfigError(msg)


def _clip_hint(data_shape: tuple[int, ...], model_shape: tuple[int, ...]) -> str:
    """The ``--data-kw`` that make clips ``(C, T, H, W)`` fit a frame-stacked ``(C, T*H, W)``."""
    if len(data_shape) != 4 or len(model_shape) != 3 or model_shape[1] % model_shape[2]:
        return ""
    c, th, w = model_shape
    hint = f": --data-kw chunk={th // w} --data-kw size={w}"
    if c != data_shape[0] and c == 6:
        hint += " --data-kw data_types=DiffNormalized,Standardized"
    elif c != data_shape[0]:
        hint += f" and {c} input channels (data_types)"
    return hint


def to_model_layout(samples: np.ndarray, model: nn.Module) -> np.ndarray:
    """Samples in the model's export layout.

    Clips are frame-stacked for 2-D rPPG nets (a reshape).
    """
    shape = tuple(getattr(model, "input_shape", ()) or ())
    if shape and _frame_stacked(tuple(samples.shape[1:]), shape):
        n, c, t, h, w = samples.shape
        return np.ascontiguousarray(samples.reshape(n, c, t * h, w))
    return samples


@dataclass(frozen=True)
class RunFiles:
    """Paths of a saved run."""

    out_dir: Path
    program: Path
    checkpoint: Path
    calibration: Path
    summary: Path


def save_run(
    out: Path,
    model: nn.Module,
    spec: dict[str, Any],
    calib: np.ndarray,
    summary: dict[str, Any],
    *,
    program_name: str = "model.pt2",
    config: dict[str, Any] | None = None,
) -> RunFiles:
    """Write the run files atomically (each file via a temporary name and a rename).

    Under DDP only rank 0 writes; the other replicas wait for it and get the same paths.
    """
    from tinyprune.training import distributed, save_checkpoint

    files = RunFiles(
        out, out / program_name, out / "checkpoint.pt", out / "calib.npy", out / "summary.json"
    )
    if not distributed.is_main():
        distributed.barrier()
        return files
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.from_numpy(calib[:1])
    program = torch.export.export(model, (example,))
    prog_path = out / program_name
    with atomic_path(prog_path) as tmp:
        torch.export.save(program, str(tmp))
    ckpt = save_checkpoint(out / "checkpoint.pt", model, spec, {"summary": _plain(summary)})
    with atomic_path(out / "calib.npy") as tmp, tmp.open("wb") as f:
        np.save(f, calib)
    write_text_atomic(out / "summary.json", json.dumps(_plain(summary), indent=2) + "\n")
    if config is not None:
        write_text_atomic(out / "config.toml", to_toml(_plain(config)))
    distributed.barrier()
    return RunFiles(out, prog_path, Path(ckpt), out / "calib.npy", out / "summary.json")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value


def check_out_dir(out: Path) -> None:
    """Refuse an output folder that cannot be written, before any training starts.

    Raises:
        ConfigError: ``out`` is an existing file, or it (or its nearest existing parent) is
            not a writable folder.
    """
    import os

    if out.exists() and not out.is_dir():
        msg = f"--out {str(out)!r} is an existing file, not a folder; pick another --out"
        raise ConfigError(msg)
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        msg = f"--out {str(out)!r}: {str(probe)!r} is not a writable folder; pick another --out"
        raise ConfigError(msg)


def check_finite_data(bundle: Any, data_name: str) -> None:
    """Refuse NaN/Inf in the inputs or labels of any split (they train to nonsense silently).

    Raises:
        ConfigError: Naming the split, inputs or labels, and how many values are not finite.
    """
    for split in ("train", "val", "test"):
        ds = getattr(bundle, split, None)
        if ds is None:
            continue
        for what in ("x", "y"):
            values = getattr(ds, what, None)
            if values is None:
                continue
            arr = np.asarray(values)
            if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
                bad = int(arr.size - np.isfinite(arr).sum())
                kind = "inputs" if what == "x" else "labels"
                msg = (
                    f"data {data_name}: {bad} {kind} of the {split} split are NaN or Inf; "
                    "fix or drop those samples (e.g. gaps in the ground-truth PPG)"
                )
                raise ConfigError(msg)
