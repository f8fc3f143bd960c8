"""Data sets for tinyprune: one entry point, :func:`build_dataset`, returning a :class:`DataBundle`.

Specs: ``synthetic-rppg`` (seeded synthetic face videos, docs/methods.md §10), ``digits``
(scikit-learn),
``pure:/path`` and ``ubfc:/path`` (rPPG data sets in their real on-disk formats, §8),
``cifar10:/path`` (local ``cifar-10-batches-py``). Nothing is downloaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tinyprune.errors import ConfigError

if TYPE_CHECKING:
    from tinyprune.data.builders import DATASETS
    from tinyprune.data.bundle import ArrayDataset, ClipDataset, DataBundle, Loaders

# The builders and bundles need torch; the format readers (pure, ubfc, avi, preprocess) do not,
# and the torch-free runtime (tinyprune.runtime) imports them. So the package loads the torch
# side only when one of these names is first used (PEP 562).
_LAZY = {
    "DATASETS": "tinyprune.data.builders",
    "ArrayDataset": "tinyprune.data.bundle",
    "ClipDataset": "tinyprune.data.bundle",
    "DataBundle": "tinyprune.data.bundle",
    "Loaders": "tinyprune.data.bundle",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    msg = f"module 'tinyprune.data' has no attribute {name!r}"
    raise AttributeError(msg)


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
    from tinyprune.data.builders import DATASETS

    name, sep, path = spec.partition(":")
    builder = DATASETS.get(name)
    _check_options(name, builder, kw)
    return builder(path if sep else None, **kw)


def _check_options(name: str, builder: Any, kw: dict[str, Any]) -> None:
    """An option the data set's builder does not take is a usage error listing those it takes."""
    import difflib

    from tinyprune.data.builders import builder_options

    known = builder_options(builder)
    if known is None:
        return
    unknown = sorted(set(kw) - set(known))
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        msg = (
            f"data set {name!r} has no option {', '.join(map(repr, unknown))}{hint}; "
            f"its options: {', '.join(known) or '(none)'}"
        )
        raise ConfigError(msg)


def dataset_names() -> list[str]:
    """Registered data-set names."""
    from tinyprune.data.builders import DATASETS

    return DATASETS.names()
