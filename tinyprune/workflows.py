"""Whole jobs behind the CLI: train a zoo/user model on a data set, evaluate it, save a run.

A run folder holds ``model.pt2`` (a ``torch.export`` program that ``tinyprune export`` takes),
``checkpoint.pt`` (state_dict + model spec, loaded with ``weights_only=True``), ``calib.npy``
(int8 calibration samples from the training set) and ``summary.json``.
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

from tinyprune.errors import ConfigError
from tinyprune.fileio import atomic_path, write_text_atomic

log = logging.getLogger(__name__)


def parse_kwargs(items: list[str] | None, what: str) -> dict[str, Any]:
    """``["width=8", "size=16"]`` -> ``{"width": 8, "size": 16}``.

    Values are Python literals, else strings.
    """
    import ast

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            msg = f"{what} option {item!r} is not KEY=VALUE (e.g. width=8)"
            raise ConfigError(msg)
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value
    return out


def task_loss(task: str) -> Any:
    """The training loss of a task: cross-entropy (classification) or negative Pearson (rPPG)."""
    from tinyprune.metrics import neg_pearson_loss

    if task == "classification":
        return nn.CrossEntropyLoss()
    if task == "rppg":
        return neg_pearson_loss
    msg = f"unknown task {task!r}; expected 'classification' or 'rppg'"
    raise ConfigError(msg)


#: Fewest samples per clip for which the validation metric includes an FFT heart rate.
MIN_HR_SAMPLES = 64


def task_metric(task: str, fs: float | None = None) -> Any:
    """``metric(outputs, targets) -> dict``: top-1 accuracy; or, for rPPG, the per-clip Pearson
    correlation of the waveform plus HR MAE/RMSE when clips are long enough for an FFT rate."""
    from tinyprune.metrics import hr_errors, hr_from_bvp, top1_accuracy

    if task == "classification":
        return lambda out, y: {"accuracy": top1_accuracy(out, y)}

    def rppg(out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        rate = float(fs or 30.0)
        pred, true = out.detach().double(), y.detach().double()
        pc, tc = pred - pred.mean(1, keepdim=True), true - true.mean(1, keepdim=True)
        r = (pc * tc).sum(1) / (pc.norm(dim=1) * tc.norm(dim=1)).clamp_min(1e-12)
        result = {"pearson": float(r.mean())}
        if pred.shape[1] >= MIN_HR_SAMPLES:  # shorter clips give no meaningful FFT heart rate
            hr_p = [hr_from_bvp(p.numpy(), rate) for p in pred]
            hr_t = [hr_from_bvp(t.numpy(), rate) for t in true]
            err = hr_errors(np.array(hr_p), np.array(hr_t))
            result |= {"hr_mae": float(err.mae), "hr_rmse": float(err.rmse)}
        return result

    return rppg


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
        )
        raise ConfigError(msg)


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


def train_run(
    model_spec: str,
    data_spec: str,
    out: str | Path,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    calib_samples: int = 128,
    progress: bool = True,
    model_kwargs: dict[str, Any] | None = None,
    data_kwargs: dict[str, Any] | None = None,
) -> RunFiles:
    """Train MODEL on DATA from scratch (or fine-tune a factory's weights) and save a run."""
    from tinyprune.data import build_dataset
    from tinyprune.model_source import load_model
    from tinyprune.training import TrainConfig, distributed, fit

    distributed.init_from_env()  # a no-op unless launched with torchrun
    torch.manual_seed(seed)
    loaded = load_model(model_spec, **(model_kwargs or {}))
    model = loaded.module
    if model is None:
        msg = "training needs a PyTorch model; an .onnx file can only be exported"
        raise ConfigError(msg)
    bundle = build_dataset(data_spec, **(data_kwargs or {}))
    check_compatible(model, bundle, model_spec, data_spec)
    loaders = bundle.loaders(batch_size=batch_size, seed=seed)
    cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    result = fit(
        model,
        loaders.train,
        cfg,
        loss_fn=task_loss(bundle.task),
        val_loader=loaders.test or loaders.val,
        evaluate_fn=task_metric(bundle.task, bundle.fs),
        progress=progress,
    )
    calib = to_model_layout(
        bundle.calibration_batches(min(calib_samples, len(bundle.train)), seed=seed), model
    )
    summary = {
        "model": model_spec,
        "data": data_spec,
        "train": cfg.to_dict(),
        "fit": result.to_dict(),
    }
    return save_run(Path(out), model, {"name": loaded.name, "source": model_spec}, calib, summary)
