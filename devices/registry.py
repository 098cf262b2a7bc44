"""Name -> class registries for the device mechanisms.

Every physical effect is one small class; a profile chooses it by name (``read.model = "pcm_1f"``).
A wrong name is an error that lists the valid ones.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownMechanismError(ValueError):
    """A mechanism name that no registry entry has; the message lists the valid names."""


class Registry(Generic[T]):
    """A small named registry of mechanism classes of one kind (e.g. ``"read noise model"``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: register the class under ``name`` (names are unique per registry)."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            setattr(obj, "registry_name", name)
            return obj

        return deco

    def get(self, name: str) -> T:
        """The class registered as ``name``; an unknown name raises and lists the valid ones."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownMechanismError(
                f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}"
            ) from None

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._items)})"
