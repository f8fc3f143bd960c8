"""Checkpoints that can be loaded safely: tensors plus plain data, never pickled code.

A checkpoint holds the model's ``state_dict``, the *spec* needed to rebuild the architecture
(a zoo name with its keyword arguments, or a factory path) and free-form ``extra`` data
(epoch, metrics, masks). Loading uses ``torch.load(weights_only=True)``, which refuses any
object outside torch's allowlist, so a checkpoint from elsewhere cannot run code.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tinyprune.errors import ConfigError
from tinyprune.fileio import atomic_path

FORMAT = "tinyprune-checkpoint"
VERSION = 1
_PLAIN = (str, int, float, bool, type(None))


def _check_plain(value: Any, where: str, *, allow_tensors: bool) -> None:
    """Raise ConfigError unless ``value`` is plain data that weights_only loading accepts."""
    if isinstance(value, _PLAIN) or (allow_tensors and isinstance(value, torch.Tensor)):
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]", allow_tensors=allow_tensors)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                msg = f"checkpoint {where} has a non-string key {key!r}; use str keys"
                raise ConfigError(msg)
            _check_plain(item, f"{where}[{key!r}]", allow_tensors=allow_tensors)
        return
    kinds = "str, int, float, bool, None, lists, dicts" + (" and tensors" if allow_tensors else "")
    msg = (
        f"checkpoint {where} holds a {type(value).__name__}, which weights_only loading "
        f"refuses; store only {kinds}"
    )
    raise ConfigError(msg)


def _check_spec(spec: Any) -> None:
    if not isinstance(spec, Mapping) or not ({"name", "factory"} & set(spec)):
        msg = (
            f"checkpoint spec must be a dict with 'name' (zoo model) or 'factory' "
            f"('pkg.module:function') plus its kwargs, got {spec!r}"
        )
        raise ConfigError(msg)
    _check_plain(spec, "spec", allow_tensors=False)


def _bare_state_dict(model: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(model, nn.Module):
        module = getattr(model, "module", model) if _is_ddp(model) else model
        return {k: v.detach().cpu() for k, v in module.state_dict().items()}
    _check_plain(model, "state_dict", allow_tensors=True)
    return {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in model.items()}


def _is_ddp(model: nn.Module) -> bool:
    return isinstance(model, torch.nn.parallel.DistributedDataParallel)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module | Mapping[str, torch.Tensor],
    spec: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights, its spec and ``extra`` to ``path`` atomically.

    Args:
        path: destination file (conventionally ``*.pt``); parent folders are created.
        model: the model (a DDP wrapper is unwrapped) or a ready ``state_dict``.
        spec: how to rebuild the architecture, e.g. ``{"name": "physnet_2d", "kwargs": {...}}``
            or ``{"factory": "pkg.mod:make", "kwargs": {...}}``; plain data only.
        extra: anything else to keep (epoch, metrics, masks): plain data and tensors.

    Returns:
        The path written.

    Raises:
        ConfigError: spec or extra hold objects that weights_only loading would refuse.
    """
    _check_spec(spec)
    extra = dict(extra or {})
    _check_plain(extra, "extra", allow_tensors=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "state_dict": _bare_state_dict(model),
        "spec": dict(spec),
        "extra": extra,
    }
    dest = Path(path)
    with atomic_path(dest) as tmp:
        torch.save(payload, tmp)
    return dest


def load_checkpoint(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`, safely, onto the CPU.

    Returns:
        ``(state_dict, spec, extra)``.

    Raises:
        ConfigError: the file is missing, truncated, not a tinyprune checkpoint, or holds
            objects outside torch's weights_only allowlist.
    """
    src = Path(path)
    if not src.is_file():
        msg = f"checkpoint {str(src)!r} does not exist or is not a file"
        raise ConfigError(msg)
    try:
        payload = torch.load(src, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        msg = (
            f"cannot load checkpoint {str(src)!r} with weights_only=True: {first}. The file is "
            "corrupt, not a torch file, or holds objects other than tensors and plain data; "
            "re-save it with tinyprune.training.save_checkpoint"
        )
        raise ConfigError(msg) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        msg = (
            f"{str(src)!r} is a torch file but not a tinyprune checkpoint (no "
            f"format={FORMAT!r} entry); write it with tinyprune.training.save_checkpoint"
        )
        raise ConfigError(msg)
    if payload.get("version") != VERSION:
        found = payload.get("version")
        msg = f"checkpoint {str(src)!r} has version {found!r}; this tinyprune reads {VERSION}"
        raise ConfigError(msg)
    return payload["state_dict"], payload["spec"], payload.get("extra", {})
