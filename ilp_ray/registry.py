"""Name → class registries for pluggable backends (scoring engines, indexes, judges, trackers).

Modelled on lm-eval's ``api/registry.py``: entries may be lazy ``"module:attr"`` strings so that
registering a backend imports nothing heavy; an entry is checked against the registry's base class
when it is first resolved; an unknown name raises an error with a "Did you mean …" suggestion.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A registry of subclasses of ``base`` under short names.

    Args:
        kind: what the entries are, for error messages ("scoring engine").
        base: the base class every entry must subclass. May itself be a lazy "module:attr".
    """

    def __init__(self, kind: str, base: type | str):
        self.kind = kind
        self._base = base
        self._entries: dict[str, type | str] = {}

    def register(self, name: str, target: type | str | None = None):
        """Register ``target`` under ``name``; usable as a decorator when ``target`` is omitted."""
        if target is None:
            def deco(cls):
                self.register(name, cls)
                return cls
            return deco
        if name in self._entries and self._entries[name] is not target:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        if isinstance(target, str) and ":" not in target:
            raise ValueError(f"lazy {self.kind} entry must be 'module:attr', got {target!r}")
        self._entries[name] = target
        return target

    def names(self) -> list[str]:
        return sorted(self._entries)

    def registered(self) -> list[str]:
        """The names in the order they were registered."""
        return list(self._entries)

    def get(self, name: str) -> type[T]:
        """Resolve ``name`` to its class, importing it if the entry is lazy.

        Raises:
            KeyError: unknown name, with the closest known names suggested.
            TypeError: the entry is not a subclass of the registry's base class.
        """
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}.{hint}")
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = _load(entry)
            self._entries[name] = entry
        base = _load(self._base) if isinstance(self._base, str) else self._base
        self._base = base
        if not (isinstance(entry, type) and issubclass(entry, base)):
            raise TypeError(f"{self.kind} {name!r} resolves to {entry!r}, not a subclass of {base.__name__}")
        return entry

    def create(self, name: str, *args, **kwargs) -> T:
        return self.get(name)(*args, **kwargs)


def _load(path: str):
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
