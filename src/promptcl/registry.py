"""One registry helper for every name a user can pick: methods, backbones, benchmarks, and the
pluggable functions inside methods (Hash's HDR penalties and HGM modulations)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from promptcl.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> (entry, one-line description). Registering a name twice is a programming error
    (ValueError); asking for an unknown name is a user error (UsageError listing the choices)."""

    def __init__(self, kind: str, patterns: dict[str, str] | None = None) -> None:
        self.kind = kind
        self.patterns = dict(patterns or {})  # e.g. "hf:DIR": description, resolved elsewhere
        self._entries: dict[str, tuple[T, str]] = {}

    def add(self, name: str, entry: T, description: str = "") -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = (entry, description)
        return entry

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        """Decorator form of ``add``."""
        return lambda entry: self.add(name, entry, description)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise UsageError(f"unknown {self.kind} {name!r}; choose one of: {self.choices()}")
        return self._entries[name][0]

    def choices(self) -> str:
        return ", ".join([*self._entries, *self.patterns])

    def describe(self) -> dict[str, str]:
        """Name -> description, patterns included (for ``promptcl list``)."""
        return {name: d for name, (_, d) in self._entries.items()} | self.patterns

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return ((name, entry) for name, (entry, _) in self._entries.items())
