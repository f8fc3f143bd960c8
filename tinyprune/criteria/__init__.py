"""Pruning criteria behind one registry: ``get(name, **hyperparameters)``, ``names()``, ``help()``.

Importing this package registers every built-in criterion. Structured (CHANNEL) criteria are
used by :func:`tinyprune.pruning.structured.prune_structured`; unstructured (ELEMENT) ones by
the mask engine.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from tinyprune.criteria.base import CRITERIA, Criterion, Granularity, ScoreInput
from tinyprune.errors import ConfigError

# Each module registers its criteria with ``@CRITERIA.register`` when imported.
for _module in ("baselines", "pcc_ci", "tailored", "cluster_de", "wgj", "sparse_baselines"):
    importlib.import_module(f"tinyprune.criteria.{_module}")


def get(name: str, **hyperparameters: Any) -> Any:
    """A criterion instance: ``get("l1", p=2)``.

    Raises:
        UnknownNameError: Unknown criterion name (with the closest match).
        ConfigError: An option the criterion does not have (lists the ones it has).
    """
    cls = CRITERIA.get(name)
    if dataclasses.is_dataclass(cls):
        known = [f.name for f in dataclasses.fields(cls) if f.init]
        unknown = sorted(set(hyperparameters) - set(known))
        if unknown:
            msg = (
                f"criterion {name!r} has no option {', '.join(map(repr, unknown))}; "
                f"its options: {', '.join(known) or '(none)'}"
            )
            raise ConfigError(msg)
    return cls(**hyperparameters)


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
