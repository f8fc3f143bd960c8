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


def task_loss(task: str) -> Any:
    """The training loss of a task: cross-entropy (classification) or negative Pearson (rPPG)."""
    from tinyprune.metrics import neg_pearson_loss

    if task == "classification":
        return nn.CrossEntropyLoss()
    if task == "rppg":
        return neg_pearson_loss
    msg = f"unknown task {task!r}; expected 'classification' or 'rppg'"
    raise ConfigError(msg)


def task_metric(task: str, fs: float | None = None) -> Any:
    """``metric(outputs, targets) -> dict``: top-1 accuracy, or HR MAE/RMSE from the BVP."""
    from tinyprune.metrics import hr_errors, hr_from_bvp, top1_accuracy

    if task == "classification":
        return lambda out, y: {"accuracy": top1_accuracy(out, y)}

    def rppg(out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        rate = float(fs or 30.0)
        pred = [hr_from_bvp(p.numpy(), rate) for p in out.detach()]
        gt = [hr_from_bvp(t.numpy(), rate) for t in y.detach()]
        err = hr_errors(np.array(pred), np.array(gt))
        return {"hr_mae": float(err.mae), "hr_rmse": float(err.rmse)}

    return rppg


def check_compatible(model: nn.Module, bundle: Any, model_name: str, data_name: str) -> None:
    """Raise when model and data disagree on task or per-sample input shape."""
    shape = tuple(getattr(model, "input_shape", ()) or ())
    task = getattr(model, "task", bundle.task)
    if task != bundle.task:
        msg = f"model {model_name} is a {task} model but data {data_name} is a {bundle.task} data set"
        raise ConfigError(msg)
    if shape and tuple(bundle.input_shape) != shape:
        msg = (f"data {data_name} gives samples of shape {tuple(bundle.input_shape)} but model "
               f"{model_name} expects {shape}; pick matching sizes (model kwargs or data options)")
        raise ConfigError(msg)


@dataclass(frozen=True)
class RunFiles:
    """Paths of a saved run."""

    out_dir: Path
    program: Path
    checkpoint: Path
    calibration: Path
    summary: Path


def save_run(out: Path, model: nn.Module, spec: dict[str, Any], calib: np.ndarray,
             summary: dict[str, Any], *, program_name: str = "model.pt2") -> RunFiles:
    """Write the run files atomically (each file via a temporary name and a rename)."""
    from tinyprune.training import save_checkpoint

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


def train_run(model_spec: str, data_spec: str, out: str | Path, *, epochs: int, lr: float = 1e-3,
              batch_size: int = 32, seed: int = 0, calib_samples: int = 128,
              progress: bool = True) -> RunFiles:
    """Train MODEL on DATA from scratch (or fine-tune a factory's weights) and save a run."""
    from tinyprune.data import build_dataset
    from tinyprune.model_source import load_model
    from tinyprune.training import TrainConfig, fit

    torch.manual_seed(seed)
    loaded = load_model(model_spec)
    model = loaded.module
    if model is None:
        msg = "training needs a PyTorch model; an .onnx file can only be exported"
        raise ConfigError(msg)
    bundle = build_dataset(data_spec)
    check_compatible(model, bundle, model_spec, data_spec)
    loaders = bundle.loaders(batch_size=batch_size, seed=seed)
    cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    result = fit(model, loaders.train, cfg, loss_fn=task_loss(bundle.task),
                 val_loader=loaders.test or loaders.val,
                 evaluate_fn=task_metric(bundle.task, bundle.fs), progress=progress)
    calib = bundle.calibration_batches(min(calib_samples, len(bundle.train)), seed=seed)
    summary = {"model": model_spec, "data": data_spec, "train": cfg.to_dict(), "fit": result.to_dict()}
    return save_run(Path(out), model, {"name": loaded.name, "source": model_spec}, calib, summary)
