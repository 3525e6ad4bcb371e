"""Hooked: what an object needs to run its calls through a middleware (brokers are).

A `Connection` hands each of its brokers its `Middleware` (`broker.middleware = ...`);
from then on the broker's around calls (`repid.middleware._chain`) find their chains
here, and hooks receive `hook_connection` as `connection`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from repid.middleware._manager import NO_CHAINS, Chains

if TYPE_CHECKING:
    from repid.connection import Connection
    from repid.middleware._manager import Middleware


class Hooked:
    """The middleware slot of a broker: its chains, and the connection hooks are told of."""

    _middleware: Middleware | None = None
    _chains: Chains = NO_CHAINS
    _owner: Connection | None = None

    @property
    def middleware(self) -> Middleware | None:
        """The middleware this object's calls go through (None: nothing runs around them)."""
        return self._middleware

    @middleware.setter
    def middleware(self, value: Middleware | None) -> None:
        self._middleware = value
        self._chains = NO_CHAINS if value is None else value.chains
        self._owner = None if value is None else value.connection

    @property
    def chains(self) -> Chains:
        """What runs around this object's calls, one slot per call (updated in place when
        plugins come and go); its consumers take it when they are made."""
        return self._chains

    @property
    def hook_connection(self) -> Connection | None:
        """The `connection` argument of the hooks around this object's calls."""
        return self._owner

    def is_hooked(self, event: str) -> bool:
        """Whether plugins or v1 subscribers run around the call `event` (`"enqueue"`,
        ...): a broker's batched fast path is only for calls nothing runs around."""
        return getattr(self._chains, event) is not None
