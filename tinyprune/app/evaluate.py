"""``tinyprune eval``: the task metric of a run or model on one split of a data set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinyprune.config import DataSpec, EvalConfig
from tinyprune.errors import ConfigError, UnknownNameError
from tinyprune.registry import unknown_name_message


def eval_run(
    source: str,
    data: DataSpec | None = None,
    split: str = EvalConfig.split,
    batch_size: int = EvalConfig.batch_size,
) -> dict[str, float]:
    """Evaluate ``source`` (a run folder, ``.pt2``, ``zoo:NAME`` or ``file.py:factory``).

    Args:
        source: What to evaluate; a run folder gives its program and its data set.
        data: The data set (default: the run's own, with the run's data options).
        split: ``test``, ``val``, ``train`` or an extra set of the data (e.g. ``real_ppg``).
        batch_size: Samples per forward pass (an exported program runs one at a time).

    Raises:
        ConfigError: No data, a PyTorch-less model, or model and data that do not match.
    """
    import torch
    from torch.utils.data import DataLoader

    from tinyprune.app.runs import check_compatible
    from tinyprune.app.sources import ExportedModule, load_model
    from tinyprune.app.tasks import task_metric
    from tinyprune.data import build_dataset
    from tinyprune.training import evaluate

    spec, data = _resolve(source, data)
    loaded = load_model(spec)
    if loaded.module is None:
        msg = f"eval needs a PyTorch model, got {spec!r}; an .onnx file can only be exported"
        raise ConfigError(msg)
    bundle = build_dataset(data.name, **data.options)
    ds = _split(bundle, split)
    check_compatible(loaded.module, bundle, spec, data.name)
    shape = tuple(loaded.input_shape or ds.x.shape[1:])

    def as_model_input(batch: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([b[0] for b in batch])
        return x.reshape(len(batch), *shape), torch.stack([b[1] for b in batch])

    batch = 1 if isinstance(loaded.module, ExportedModule) else batch_size  # .pt2: batch 1
    loader = DataLoader(ds, batch_size=batch, collate_fn=as_model_input)
    with torch.no_grad():
        return evaluate(loaded.module, loader, task_metric(bundle.task, bundle.fs))


def _resolve(source: str, data: DataSpec | None) -> tuple[str, DataSpec]:
    """MODEL string and data set of ``tinyprune eval``: a run folder gives both."""
    run = Path(source)
    if run.is_dir():
        program = next((run / n for n in ("pruned.pt2", "model.pt2") if (run / n).is_file()), None)
        if program is None:
            msg = (
                f"run folder {source!r} holds neither pruned.pt2 nor model.pt2; pass a run or MODEL"
            )
            raise ConfigError(msg)
        if data is None:
            data = _run_data(run)
        source = str(program)
    if data is None:
        msg = f"no --data given and {source!r} is not a run folder with summary.json; pass --data"
        raise ConfigError(msg)
    return source, data


def _run_data(run: Path) -> DataSpec | None:
    """The data set a run was made with: its config.toml (with options), else summary.json."""
    from tinyprune.config import load_toml

    if (run / "config.toml").is_file():
        section = load_toml(run / "config.toml").get("data", {})
        if "name" in section:
            return DataSpec(section["name"], dict(section.get("options", {})))
    summary = run / "summary.json"
    if summary.is_file():
        name = json.loads(summary.read_text()).get("data")
        return DataSpec(name) if name else None
    return None


def _split(bundle: Any, split: str) -> Any:
    sets = {"test": bundle.test, "val": bundle.val, "train": bundle.train, **bundle.extras}
    if split not in sets:
        raise UnknownNameError(unknown_name_message("split", split, sorted(sets)))
    return sets[split]
