"""Data sets for tinyprune: one entry point, :func:`build_dataset`, returning a :class:`DataBundle`.

Specs: ``synthetic-rppg`` (seeded synthetic face videos, methods.md §10), ``digits`` (scikit-learn),
``pure:/path`` and ``ubfc:/path`` (rPPG data sets in their real on-disk formats, §8),
``cifar10:/path`` (local ``cifar-10-batches-py``). Nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

from tinyprune.data.builders import DATASETS
from tinyprune.data.bundle import ArrayDataset, ClipDataset, DataBundle, Loaders

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "ClipDataset",
    "DataBundle",
    "Loaders",
    "build_dataset",
    "dataset_names",
]


def build_dataset(spec: str, **kw: Any) -> DataBundle:
    """Build the data set named by ``spec`` (``name`` or ``name:/path``).

    Args:
        spec: e.g. ``"digits"``, ``"synthetic-rppg"``, ``"pure:/data/PURE"``.
        **kw: Options of that data set's builder (see ``DATASETS.help(name)`` and the builder).

    Returns:
        The :class:`DataBundle`.

    Raises:
        UnknownNameError: the name part is not a registered data set.
        ConfigError: a missing/malformed folder or a bad option.
    """
    name, sep, path = spec.partition(":")
    builder = DATASETS.get(name)
    return builder(path if sep else None, **kw)


def dataset_names() -> list[str]:
    """Registered data-set names."""
    return DATASETS.names()
