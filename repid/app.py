"""Repid and the magic: a connection bound once, found by every Job, Queue and Worker."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from repid.connection import Connection
from repid.errors import NoConnectionError


class Repid:
    """Binds a Connection so that Jobs, Queues and Workers need no `_connection=`.

    The bound connection lives in a thread-local on the class: one per thread, shared by
    every Repid instance in it.
    """

    _local = threading.local()

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    @classmethod
    def get_magic_connection(cls) -> Connection | None:
        """The connection bound in this thread, if any."""
        return getattr(cls._local, "connection", None)

    @classmethod
    def bind(cls, connection: Connection | None) -> None:
        """Make `connection` the one found by magic in this thread (None: unbind). What
        `magic_connect()` does after connecting; the pytest plugin binds its in-memory
        app with it."""
        cls._local.connection = connection

    async def magic_connect(self) -> Connection:
        """Connect (if not open yet) and bind this app's connection."""
        if not self.connection.is_open:
            await self.connection.connect()
        self.bind(self.connection)
        return self.connection

    async def magic_disconnect(self) -> None:
        """Disconnect and unbind this app's connection."""
        if self.connection.is_open:
            await self.connection.disconnect()
        if self.get_magic_connection() is self.connection:
            self.bind(None)

    @asynccontextmanager
    async def magic(self, auto_disconnect: bool = False) -> AsyncIterator[Connection]:
        """Connect and bind the connection. Connections are long-lived, so it stays open
        and bound after the block, unless `auto_disconnect=True`."""
        await self.magic_connect()
        try:
            yield self.connection
        finally:
            if auto_disconnect:
                await self.magic_disconnect()

def resolve_connection(explicit: Connection | None, what: str) -> Connection:
    """`explicit` if given, else the magic connection; a clear error when there is none."""
    if explicit is not None:
        return explicit
    bound = Repid.get_magic_connection()
    if bound is None:
        raise NoConnectionError(what)
    return bound
