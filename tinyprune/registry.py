"""A tiny name -> object registry used for models, criteria and device profiles."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from tinyprune.errors import UnknownNameError, unknown_name_message

__all__ = ["Registry", "unknown_name_message"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps short lower_snake names to objects (factories, classes, config files)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``; duplicate names are a bug."""

        def deco(obj: T) -> T:
            if name in self._items:
                msg = f"{self.kind} {name!r} is registered twice"
                raise ValueError(msg)
            self._items[name] = obj
            doc = help or (getattr(obj, "__doc__", None) or "").strip().splitlines()
            self._help[name] = doc if isinstance(doc, str) else (doc[0] if doc else "")
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the object registered as ``name`` or raise :class:`UnknownNameError`."""
        if name not in self._items:
            raise UnknownNameError(unknown_name_message(self.kind, name, self.names()))
        return self._items[name]

    def help(self, name: str) -> str:
        """One-line description of ``name``."""
        self.get(name)
        return self._help[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
