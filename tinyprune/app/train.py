"""``tinyprune train``: train a zoo or user model on a data set and save a run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from tinyprune.app.contract import as_record, built_contract, declared, resolve_data
from tinyprune.app.runs import (
    RunFiles,
    check_compatible,
    check_finite_data,
    check_out_dir,
    save_run,
    to_model_layout,
)
from tinyprune.app.sources import load_model
from tinyprune.app.tasks import task_loss, task_metric
from tinyprune.config import DataSpec, ModelSpec, TrainRunConfig
from tinyprune.errors import ConfigError


def train_run(
    model: ModelSpec | str, data: DataSpec | str, cfg: TrainRunConfig, out: str | Path
) -> RunFiles:
    """Train MODEL on DATA from scratch (or fine-tune a factory's weights) and save a run.

    Args:
        model: The MODEL and its factory options.
        data: The data set and its options.
        cfg: Epochs, learning rate, batch size, seed, calibration samples.
        out: The run folder (checked writable before training starts).
    """
    from tinyprune.data import build_dataset
    from tinyprune.training import TrainConfig, distributed, fit

    spec = model if isinstance(model, ModelSpec) else ModelSpec(str(model))
    data = data if isinstance(data, DataSpec) else DataSpec(str(data))
    check_out_dir(Path(out))
    distributed.init_from_env()  # a no-op unless launched with torchrun
    torch.manual_seed(cfg.seed)
    loaded = load_model(spec.source, **spec.options)
    net = loaded.module
    if net is None:
        msg = "training needs a PyTorch model; an .onnx file can only be exported"
        raise ConfigError(msg)
    bundle = build_dataset(data.name, **resolve_data(data, declared(net), spec.source).options)
    check_compatible(net, bundle, spec.source, data.name)
    contract = as_record(built_contract(bundle, net))
    check_finite_data(bundle, data.name)
    loaders = bundle.loaders(batch_size=cfg.batch_size, seed=cfg.seed)
    train_cfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed)
    result = fit(
        net,
        loaders.train,
        train_cfg,
        loss_fn=task_loss(bundle.task),
        val_loader=loaders.test or loaders.val,
        evaluate_fn=task_metric(bundle.task, bundle.fs),
        progress=cfg.progress,
    )
    n_calib = min(cfg.calib_samples, len(bundle.train))
    calib = to_model_layout(bundle.calibration_batches(n_calib, seed=cfg.seed), net)
    summary = {
        "model": spec.source,
        "data": data.name,
        "train": train_cfg.to_dict(),
        "fit": result.to_dict(),
        "preprocessing": contract,
    }
    config = {"train": dataclasses.asdict(cfg), "model": spec.to_dict(), "data": data.to_dict()}
    if contract is not None:
        config["preprocessing"] = contract
    return save_run(
        Path(out), net, {"name": loaded.name, "source": spec.source}, calib, summary, config=config
    )
