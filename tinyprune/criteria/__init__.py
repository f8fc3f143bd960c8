"""Pruning criteria behind one registry: ``get(name, **hyperparameters)``, ``names()``, ``help()``.

Importing this package registers every built-in criterion. Structured (CHANNEL) criteria are
used by :func:`tinyprune.pruning.structured.prune_structured`; unstructured (ELEMENT) ones by
the mask engine.
"""

from __future__ import annotations

import importlib
from typing import Any

from tinyprune.criteria.base import CRITERIA, Criterion, Granularity, ScoreInput

for _module in ("baselines", "pcc_ci", "tailored", "cluster_de", "sparse_baselines"):
    try:
        _mod = importlib.import_module(f"tinyprune.criteria.{_module}")
    except ModuleNotFoundError as _e:  # a family not present in this checkout (yet)
        if _e.name != f"tinyprune.criteria.{_module}":
            raise
        continue
    if hasattr(_mod, "register_unstructured"):  # wgj, gmp, set, rigl (ELEMENT granularity)
        _mod.register_unstructured(CRITERIA)


def get(name: str, **hyperparameters: Any) -> Any:
    """A criterion instance: ``get("l1", p=2)``; unknown names raise UnknownNameError."""
    return CRITERIA.get(name)(**hyperparameters)


def names(granularity: Granularity | None = None) -> list[str]:
    """Registered names (sorted), optionally only those of one granularity."""
    return [
        n
        for n in CRITERIA.names()
        if granularity is None or getattr(CRITERIA.get(n), "granularity", None) is granularity
    ]


def help(name: str) -> str:  # noqa: A001 - mirrors Registry.help
    """One-line description of criterion ``name``."""
    return CRITERIA.help(name)


__all__ = ["CRITERIA", "Criterion", "Granularity", "ScoreInput", "get", "help", "names"]
