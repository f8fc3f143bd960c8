"""The loss and the metric of each task: classification and rPPG."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from tinyprune.errors import ConfigError


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
    """``metric(outputs, targets) -> dict`` of a task.

    Top-1 accuracy; or, for rPPG, the per-clip Pearson correlation of the waveform plus HR
    MAE/RMSE when clips are long enough for an FFT rate.
    """
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
