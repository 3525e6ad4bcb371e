"""Stash: the state plugins keep for one delivery of a message, from its take to its settle.

Every delivery has one (`repid.Delivery.stash`, passed to the hooks about a delivery as
`stash`; the delivered key's `key.stash` reads it too, kept for this release), so a plugin
keeps what it learned about a delivery (its span, when its run started, how the run ended) on
the delivery itself instead of in a map keyed by message id: nothing to evict, nothing
shared between two deliveries of one message. Each plugin makes its own typed keys::

    RUN = StashKey[float]()

    @hookimpl(wrapper=True)
    def repid_actor_run(self, stash):
        stash[RUN] = time.perf_counter()
        ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

T = TypeVar("T")
D = TypeVar("D")


class StashKey(Generic[T]):
    """A key of a `Stash` whose values are `T`; compared by identity, so two plugins'
    keys never clash."""

    __slots__ = ()


if TYPE_CHECKING:

    class Stash:
        """A small typed mapping of `StashKey[T]` to `T`."""

        def __setitem__(self, key: StashKey[T], value: T) -> None: ...

        def __getitem__(self, key: StashKey[T]) -> T: ...

        def get(self, key: StashKey[T], default: D) -> T | D:
            """The value under `key`, or `default`."""

        def setdefault(self, key: StashKey[T], default: T) -> T:
            """The value under `key`, stored as `default` first if there is none."""

        def pop(self, key: StashKey[T], default: D) -> T | D:
            """Remove and return the value under `key`, or `default`."""

        def __delitem__(self, key: StashKey[T]) -> None: ...

        def __contains__(self, key: object) -> bool: ...

        def __len__(self) -> int: ...

else:

    class Stash(dict):
        """A small typed mapping of `StashKey[T]` to `T`.

        At run time a plain dict (made, read and written in C: plugins touch it several
        times per message); the typed methods above are what type checkers see."""

        __slots__ = ()
