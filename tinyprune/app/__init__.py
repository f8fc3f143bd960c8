"""The application layer: the only place that wires data, models, training, pruning and export.

Each module is one job behind one CLI command: :mod:`~tinyprune.app.train`,
:mod:`~tinyprune.app.prune` (with the job phases in :mod:`~tinyprune.app.jobs` and the
board fit in :mod:`~tinyprune.app.fit`), :mod:`~tinyprune.app.evaluate`,
:mod:`~tinyprune.app.export`, :mod:`~tinyprune.app.demo`; :mod:`~tinyprune.app.sources` resolves
MODEL strings and :mod:`~tinyprune.app.runs` reads and writes run folders. Importing this package
imports none of them (torch and TensorFlow load only when a job runs).
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "load_model": "tinyprune.app.sources",
    "train_run": "tinyprune.app.train",
    "prune_run": "tinyprune.app.prune",
    "eval_run": "tinyprune.app.evaluate",
    "export_model": "tinyprune.app.export",
    "run_demo": "tinyprune.app.demo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a job's module on first use."""
    import importlib

    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    msg = f"module 'tinyprune.app' has no attribute {name!r}"
    raise AttributeError(msg)
