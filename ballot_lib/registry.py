"""A tiny name -> object registry used for datasets, models, methods and pruning strategies.

Registries replace if/elif chains: every lookup of an unknown name raises an error that lists the valid names.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects of one kind (``kind`` is used in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, replace: bool = False) -> Callable[[T], T]:
        """Decorator that registers an object under ``name``; a name already taken is an error unless ``replace``
        (for a notebook cell run again)."""

        def wrap(obj: T) -> T:
            if name in self._items and not replace:
                raise KeyError(f"{self.kind} {name!r} is already registered; to replace it (e.g. re-running a "
                               f"notebook cell that registers it) pass replace=True or call "
                               f".unregister({name!r}) first")
            self._items[name] = obj
            return obj

        return wrap

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return what was registered under it (unknown names raise ``ValueError`` listing the
        valid ones). Lets a notebook cell that registers an object be run again."""
        obj = self.get(name)
        del self._items[name]
        return obj

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; unknown names raise ``ValueError`` listing valid names.

        An unknown name first imports the plugins of ``$BALLOT_PLUGINS`` (:mod:`ballot_lib.plugins`; once per
        process), so a dataset or model a plugin registers is known wherever it is looked up (the parameter
        checks run before anything imports :mod:`ballot_lib.methods`, which loads them too)."""
        if isinstance(name, str) and name not in self._items:
            from .plugins import load_plugins

            load_plugins()
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise ValueError(
                f"unknown {self.kind} {name!r}; valid choices: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and name not in self._items:  # as get(): a plugin may register it
            from .plugins import load_plugins

            load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def check_choice(what: str, value: object, valid: "tuple[str, ...] | list[str]") -> None:
    """Raise ``ValueError`` naming ``what``, the offending value and the valid choices unless ``value`` is valid."""
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {', '.join(valid)}")
