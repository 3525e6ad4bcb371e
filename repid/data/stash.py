"""Stash: the state plugins keep for one delivery of a message, from its take to its settle.

Every consumed `RoutingKey` has one (`key.stash`), made on first use, so a plugin keeps
what it learned about a delivery (its span, when its run started, how the run ended) on
the delivery itself instead of in a map keyed by message id: nothing to evict, nothing
shared between two deliveries of one message. Each plugin makes its own typed keys::

    RUN = StashKey[float]()

    @hookimpl(wrapper=True)
    def repid_actor_run(self, key):
        key.stash[RUN] = time.perf_counter()
        ...
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")
D = TypeVar("D")


class StashKey(Generic[T]):
    """A key of a `Stash` whose values are `T`; compared by identity, so two plugins'
    keys never clash."""

    __slots__ = ()


class Stash:
    """A small typed mapping of `StashKey[T]` to `T`."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[StashKey[Any], Any] = {}

    def __setitem__(self, key: StashKey[T], value: T) -> None:
        self._data[key] = value

    def __getitem__(self, key: StashKey[T]) -> T:
        return cast(T, self._data[key])

    def get(self, key: StashKey[T], default: D) -> T | D:
        """The value under `key`, or `default`."""
        return cast("T | D", self._data.get(key, default))

    def setdefault(self, key: StashKey[T], default: T) -> T:
        """The value under `key`, stored as `default` first if there is none."""
        return cast(T, self._data.setdefault(key, default))

    def pop(self, key: StashKey[T], default: D) -> T | D:
        """Remove and return the value under `key`, or `default`."""
        return cast("T | D", self._data.pop(key, default))

    def __delitem__(self, key: StashKey[T]) -> None:
        del self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)
