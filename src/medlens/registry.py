"""Name -> object registries with explicit decorators and "did you mean ...?" errors."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from medlens.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection filled by an explicit ``@registry.register("name")`` decorator.

    Example:
        >>> transforms: Registry[type] = Registry("transform")
        >>> @transforms.register("identity")
        ... class Identity: ...
        >>> transforms.get("identiy")
        Traceback (most recent call last):
        medlens.errors.ConfigError: unknown transform 'identiy'; did you mean 'identity'? ...
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ConfigError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._items), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}{hint} (available: {', '.join(sorted(self._items))})"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
