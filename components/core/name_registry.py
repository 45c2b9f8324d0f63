"""Name registries for component families: register a factory by name, build it by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a name to a factory so stages build components without if/elif ladders."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator that registers a factory under `name`."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.family} {name!r} is already registered")
            self._factories[name] = factory
            return factory

        return decorator

    def build(self, kind: str, **params: Any) -> T:
        """Build the object registered as `kind`; an unknown kind names the known ones."""
        try:
            factory = self._factories[kind]
        except KeyError:
            known = ", ".join(sorted(self._factories)) or "none"
            raise ValueError(f"unknown {self.family} {kind!r}; known: {known}") from None
        return factory(**params)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._factories)
