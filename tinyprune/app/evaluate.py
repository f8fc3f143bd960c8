"""``tinyprune eval``: the task metric of a run or model on one split of a data set."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from tinyprune.app.contract import (
    built_contract,
    check_same,
    declared,
    recorded,
    resolve_data,
    run_data,
)
from tinyprune.config import DataSpec, EvalConfig
from tinyprune.errors import ConfigError, UnknownNameError
from tinyprune.registry import unknown_name_message

log = logging.getLogger(__name__)


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

    spec, data, recorded = _resolve(source, data)
    loaded = load_model(spec)
    if loaded.module is None:
        msg = f"eval needs a PyTorch model, got {spec!r}; an .onnx file can only be exported"
        raise ConfigError(msg)
    contract = recorded or declared(loaded.module)
    bundle = build_dataset(data.name, **resolve_data(data, contract, spec).options)
    ds = _split(bundle, split)
    check_compatible(loaded.module, bundle, spec, data.name)
    _check_contract(contract, built_contract(bundle, loaded.module), source, data.name)
    shape = tuple(loaded.input_shape or ds.x.shape[1:])

    def as_model_input(batch: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([b[0] for b in batch])
        return x.reshape(len(batch), *shape), torch.stack([b[1] for b in batch])

    batch = 1 if isinstance(loaded.module, ExportedModule) else batch_size  # .pt2: batch 1
    loader = DataLoader(ds, batch_size=batch, collate_fn=as_model_input)
    with torch.no_grad():
        return evaluate(loaded.module, loader, task_metric(bundle.task, bundle.fs))


def _resolve(source: str, data: DataSpec | None) -> tuple[str, DataSpec, Any]:
    """MODEL string, data set and recorded contract of ``tinyprune eval``.

    A run folder (or a ``.pt2`` inside one) gives its program, its data set (``data`` with
    only options: the run's data set with those options on top) and its contract.
    """
    run = Path(source)
    if run.is_dir():
        program = next((run / n for n in ("pruned.pt2", "model.pt2") if (run / n).is_file()), None)
        if program is None:
            msg = (
                f"run folder {source!r} holds neither pruned.pt2 nor model.pt2; pass a run or MODEL"
            )
            raise ConfigError(msg)
        source = str(program)
    elif source.endswith(".pt2") and (run.parent / "summary.json").is_file():
        run = run.parent
    else:
        run = None  # type: ignore[assignment]
    if run is not None and (data is None or not data.name):
        own = run_data(run)
        if own is not None and data is not None:
            own = DataSpec(own.name, {**own.options, **data.options})
        data = own
    if data is None or not data.name:
        msg = f"no --data given and {source!r} is not a run folder with summary.json; pass --data"
        raise ConfigError(msg)
    return source, data, None if run is None else recorded(run)


def _check_contract(want: Any, got: Any, source: str, data_name: str) -> None:
    """The clips must be what the run trained on (the frame rate is the recording's own)."""
    if want is None or got is None:
        return
    if abs(got.fs - want.fs) > 0.05 * want.fs:
        log.warning(
            "data %s runs at %.1f fps; %s was trained at %.1f", data_name, got.fs, source, want.fs
        )
    check_same(dataclasses.replace(want, fs=got.fs), got, f"{source}", f"data {data_name}")


def _split(bundle: Any, split: str) -> Any:
    sets = {"test": bundle.test, "val": bundle.val, "train": bundle.train, **bundle.extras}
    if split not in sets:
        raise UnknownNameError(unknown_name_message("split", split, sorted(sets)))
    return sets[split]
