"""The redis-py asyncio client both Redis brokers use, with reconnect and backoff settings."""

from __future__ import annotations

import asyncio
import codecs
import secrets
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError
from redis.exceptions import TimeoutError as RedisTimeoutError

from repid.brokers._dsn import mask_dsn
from repid.brokers._spin import DEFAULT_REPLY_SPIN, Spin
from repid.brokers.redis._cluster import (
    ClusterProducer,
    discover,
    is_cluster_dsn,
    make_cluster_client,
    startup_logins,
)
from repid.brokers.redis._errors import CONNECTION_ERRORS as CONNECTION_ERRORS
from repid.brokers.redis._errors import RedisErrors, login_refused, password_ignored
from repid.brokers.redis._options import client_options
from repid.brokers.redis._sentinel import is_sentinel_dsn, sentinel_pool
from repid.errors import BrokerConnectionError

#: most connections one client opens, unless the caller chooses (`max_connections=`)
DEFAULT_MAX_CONNECTIONS = 256
#: how long a command waits for a free connection of a full pool before it fails with
#: ConnectionError, unless the caller chooses (`pool_timeout=`)
DEFAULT_POOL_TIMEOUT = 30.0

#: the client of either kind: one server (or the master Sentinel names), or a Redis Cluster
AnyRedis: TypeAlias = "Redis | RedisCluster"


def pack_bulks(parts: list[bytes], args: Any, encoding: str, errors: str,
               encode: Callable[[Any], bytes]) -> None:
    """Append each of `args` to `parts` as a RESP bulk string: str encoded with
    `encoding`, bytes as they are, anything else through `encode` (redis-py's encoder)."""
    for arg in args:
        kind = type(arg)
        if kind is str:
            data = arg.encode(encoding, errors)
        elif kind is bytes:
            data = arg
        else:
            data = encode(arg)
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(b"\r\n")


class OneJoinPacking:
    """`pack_command` that builds a command with one join.

    redis-py's asyncio connection re-joins its whole buffer once per argument, which costs
    more than the rest of a script call on the client (a script call has a dozen
    arguments). The bytes produced are the same; only the work to produce them differs.
    """

    __slots__ = ()

    def pack_command(self, *args: Any) -> list[bytes]:
        """Encode one command as a RESP array of bulk strings."""
        first = args[0]
        if isinstance(first, str):
            args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        encoder = self.encoder  # type: ignore[attr-defined]
        parts = [b"*%d\r\n" % len(args)]
        pack_bulks(parts, args, encoder.encoding, encoder.encoding_errors, encoder.encode)
        return [b"".join(parts)]


class CommandHead:
    """The first arguments of a command sent again and again with other arguments after
    them (a script's `EVALSHA`, SHA, key count and keys, and its first ARGV), packed once
    as RESP bulk strings in UTF-8 (`HeldConnection.execute_with_head`)."""

    __slots__ = ("args", "packed")

    def __init__(self, *args: str | int) -> None:
        #: the arguments themselves, for a connection that packs them itself
        self.args = args
        parts: list[bytes] = []
        pack_bulks(parts, args, "utf-8", "strict", lambda n: b"%d" % n)
        self.packed = b"".join(parts)


class HeldConnection:
    """One connection of its own for a caller that mostly sends one command at a time: a
    producer's enqueues.

    `Redis.execute_command` checks a connection out of the pool and back in, and records
    redis-py's observability data, on every command: about 15 µs, a fifth of a round trip
    on loopback. And a connection with a `socket_timeout` guards each write with
    `asyncio.wait_for`, which on Python 3.11 runs the write as a task of its own: more
    client time than the rest of the command. So this connection is opened beside the pool
    with the pool's own settings but no socket timeout, and each command is bounded as a
    whole by one `asyncio.timeout` of the same length instead (on Python 3.10, which has
    none, the connection keeps its socket timeout): a command Redis does not
    answer in time still fails (`redis.exceptions.TimeoutError`, after the connection is
    dropped), and is retried with the client's own `Retry`, like any other command (safe
    for enqueues: ids are deduplicated). A command sent while this one still waits for
    its reply goes through the pool as usual.

    While it waits for a reply it keeps the event loop polling for up to `spin` seconds
    (`repid.brokers._spin`) before the loop may sleep: a sequential producer otherwise
    waits out a thread wake-up per enqueue, longer than Redis takes to answer.
    """

    __slots__ = ("_busy", "_client", "_conn", "_spin", "_timeout")

    def __init__(self, client: Redis, spin: float = DEFAULT_REPLY_SPIN) -> None:
        self._client = client
        self._conn: Any = None
        self._busy = False
        self._spin = spin
        #: the client's socket timeout (the DSN may have set it), for a whole command
        self._timeout: float | None = client.connection_pool.connection_kwargs.get(
            "socket_timeout")

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Send one command and return its decoded reply (no response callback applies:
        use it for commands whose raw reply is what the caller wants, such as EVALSHA).
        With redis-py `options` the command goes through the pool as usual."""
        if self._busy or options:
            return await self._client.execute_command(*args, **options)  # type: ignore[no-untyped-call]
        return await self._hold(None, args)

    async def execute_with_head(self, head: CommandHead, tail: Sequence[Any]) -> Any:
        """`execute_command(*head.args, *tail)`, the head's bytes packed once."""
        if self._busy:
            return await self._client.execute_command(*head.args, *tail)  # type: ignore[no-untyped-call]
        return await self._hold(head, tail)

    async def _hold(self, head: CommandHead | None, args: Sequence[Any]) -> Any:
        """Send `head` and `args` on the held connection, retried on a dropped one."""
        self._busy = True
        try:
            conn = self._conn
            if conn is None:
                conn = self._conn = self._open()
            packed = self._pack(conn, head, args)
            return await conn.retry.call_with_retry(
                lambda: self._send(conn, packed), lambda error: conn.disconnect())
        finally:
            self._busy = False

    @staticmethod
    def _pack(conn: Any, head: CommandHead | None, args: Sequence[Any]) -> list[bytes]:
        """The command's bytes: the head's as packed (they are UTF-8, redis-py's default
        encoding; a connection set to another packs the whole command itself)."""
        if head is None:
            packed: list[bytes] = conn.pack_command(*args)
            return packed
        encoder = conn.encoder
        encoding = encoder.encoding
        if encoding != "utf-8" and codecs.lookup(encoding).name != "utf-8":
            packed = conn.pack_command(*head.args, *args)
            return packed
        parts = [b"*%d\r\n" % (len(head.args) + len(args)), head.packed]
        pack_bulks(parts, args, encoding, encoder.encoding_errors, encoder.encode)
        return [b"".join(parts)]

    if sys.version_info >= (3, 11):
        async def _send(self, conn: Any, packed: list[bytes]) -> Any:
            try:
                async with asyncio.timeout(self._timeout):
                    if not conn.is_connected:  # see `_open`
                        await conn.connect()
                    await conn.send_packed_command(packed)
                    return await self._reply(conn)
            except TimeoutError as exc:
                await conn.disconnect(nowait=True)  # a late reply must not answer the next
                raise RedisTimeoutError(
                    f"Redis did not answer within {self._timeout} s") from exc
    else:  # no asyncio.timeout: the connection keeps its socket timeout (see _open)
        async def _send(self, conn: Any, packed: list[bytes]) -> Any:
            if not conn.is_connected:  # see `_open`
                await conn.connect()
            await conn.send_packed_command(packed)
            return await self._reply(conn)

    async def _reply(self, conn: Any) -> Any:
        """The reply to the command just sent, the loop kept polling while it comes."""
        if not self._spin:
            return await conn.read_response()
        spin = Spin(self._spin)
        try:
            return await conn.read_response()
        finally:
            spin.stop()

    def _open(self) -> Any:
        """The held connection: the pool's class and settings, without the socket timeout
        where `_send` bounds each command itself. `_send` opens it with its own `connect()`
        when it is not open: a Sentinel-managed connection asks the sentinels for the
        master's address there, whereas a command sent on a closed connection would open
        it to its last (or default) address."""
        pool = self._client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        if sys.version_info >= (3, 11):
            kwargs["socket_timeout"] = None
        return pool.connection_class(**kwargs)

    async def release(self) -> None:
        """Close the connection (before the client closes)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect()


_FAST_CLASSES: dict[type, type] = {}


def with_one_join_packing(cls: type) -> type:
    """A subclass of the connection class `cls` (TCP, TLS or Unix socket) that packs
    commands with `OneJoinPacking`."""
    if issubclass(cls, OneJoinPacking):
        return cls
    fast = _FAST_CLASSES.get(cls)
    if fast is None:
        fast = type(cls.__name__, (OneJoinPacking, cls), {"__slots__": ()})
        _FAST_CLASSES[cls] = fast
    return fast


def make_client(dsn: str, *, retries: int, socket_timeout: float | None,
                socket_connect_timeout: float | None, client_name: str | None,
                extra: dict[str, Any]) -> AnyRedis:
    """A client for `dsn` (`redis://`, `rediss://`, `unix://`, or `redis+sentinel://`:
    see `_sentinel.py`) that reconnects by itself.

    A command that fails on a dropped connection is retried `retries` times on a fresh
    connection with jittered exponential backoff (50 ms doubling up to 2 s). Options in the
    DSN's query string take precedence over these keyword arguments.

    Its pool is a `BlockingConnectionPool`: at most `max_connections` (default
    `DEFAULT_MAX_CONNECTIONS`) connections, and a command issued while all are busy waits
    for one (up to `pool_timeout` seconds) instead of failing, so a worker running a
    thousand jobs at once never fails a call for want of a connection. A caller's own
    `connection_pool` is used as given.

    A `redis+cluster://` DSN, or `cluster=True` in `extra`, gives redis-py's cluster client
    instead (see `_cluster.py`).
    """
    wants_cluster = bool(extra.get("cluster"))
    extra = {name: value for name, value in extra.items() if name != "cluster"}
    if wants_cluster or is_cluster_dsn(dsn):
        return make_cluster_client(
            dsn, retries=retries, socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout, client_name=client_name,
            extra=extra, max_connections=DEFAULT_MAX_CONNECTIONS)
    options = client_options(retries=retries, socket_timeout=socket_timeout,
                             socket_connect_timeout=socket_connect_timeout,
                             client_name=client_name)
    options.update(extra)
    given_pool = options.pop("connection_pool", None)
    if given_pool is not None:
        return Redis(connection_pool=given_pool)
    options.setdefault("max_connections", DEFAULT_MAX_CONNECTIONS)
    options["timeout"] = options.pop("pool_timeout", DEFAULT_POOL_TIMEOUT)
    pool: BlockingConnectionPool
    if is_sentinel_dsn(dsn):  # the master the sentinels name, followed across failovers
        pool = sentinel_pool(dsn, options)
    else:
        pool = BlockingConnectionPool.from_url(dsn, **options)
    # the client owns the pool: closing the client closes its connections
    client = Redis.from_pool(pool)
    if "connection_class" not in extra:
        pool.connection_class = with_one_join_packing(pool.connection_class)
    return client


async def _log_in(pool: Any, **override: Any) -> AuthenticationError | None:
    """Open one connection with the pool's settings (and `override`) and PING on it: the
    AuthenticationError of a login Redis refuses (NOAUTH comes with the PING when no
    password was given), at once, else None. A Redis that cannot be reached is retried as
    the client's commands are, then raises."""
    kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0), **override}
    retry: Retry = pool.connection_kwargs.get("retry") or Retry(NoBackoff(), 0)

    async def attempt() -> AuthenticationError | None:
        conn = pool.connection_class(**kwargs)
        try:
            await conn.connect()
            await conn.send_command("PING", check_health=False)
            await conn.read_response()
        except AuthenticationError as exc:  # returned, not raised: never retried
            return exc
        finally:
            await conn.disconnect()
        return None

    async def failed(error: Exception) -> None:
        return None

    return await retry.call_with_retry(attempt, failed)


async def check_login(client: AnyRedis, where: str) -> BrokerConnectionError | None:
    """The BrokerConnectionError to raise (found at once: no retries) when Redis refuses the
    client's login, or when the DSN gives a password Redis does not check; else None.
    Redis that cannot be reached raises redis-py's error, to map as usual. On a cluster the
    login is checked on the first node the DSN lists that answers, then the client learns
    the cluster's slot map (`cluster.discover`)."""
    if isinstance(client, RedisCluster):
        unreachable: BaseException | None = None
        for login in startup_logins(client):
            try:
                refused = await check_pool_login(login, where)
            except CONNECTION_ERRORS as exc:
                unreachable = exc
                continue
            if refused is None:
                await discover(client, where)
            return refused
        if unreachable is not None:
            raise unreachable
        return None
    return await check_pool_login(client.connection_pool, where)


async def check_pool_login(pool: Any, where: str) -> BrokerConnectionError | None:
    """`check_login` for the connections of `pool` (anything with a `connection_class`
    and its `connection_kwargs`).

    redis-py logs in with `HELLO 3 AUTH`, which a user without a password (Redis's default
    user, unless `requirepass` is set) passes whatever the password, so a password for a
    Redis that needs none would be silently ignored: a second login with a random password
    must be refused, else the password is not checked. `where` is the masked DSN.
    """
    kwargs = pool.connection_kwargs
    user: str | None = kwargs.get("username")
    has_password = bool(kwargs.get("password")) and kwargs.get("credential_provider") is None
    refused = await _log_in(pool)
    if refused is not None:
        return login_refused(refused, where, user, has_password)
    if not has_password:
        return None
    if await _log_in(pool, password=secrets.token_urlsafe(24)) is not None:
        return None  # a wrong password is refused: Redis checks the password
    return password_ignored(where, user)


@dataclass(frozen=True)
class ClientSettings:
    """How a Redis broker connects: reconnect retries, timeouts, client name, and any other
    redis-py option."""

    dsn: str
    retries: int = 5
    socket_timeout: float | None = 5.0
    socket_connect_timeout: float | None = 5.0
    client_name: str | None = "repid"
    extra: dict[str, Any] = field(default_factory=dict)

    async def open(self) -> AnyRedis:
        """A client checked with a PING; BrokerConnectionError (password masked) when Redis
        does not answer, and at once when it refuses the login (`check_login`)."""
        client = make_client(self.dsn, retries=self.retries, socket_timeout=self.socket_timeout,
                             socket_connect_timeout=self.socket_connect_timeout,
                             client_name=self.client_name, extra=self.extra)
        where = mask_dsn(self.dsn)
        try:
            with RedisErrors(BrokerConnectionError, "cannot reach Redis at %s", where,
                             hint=_CHECK_ADDRESS):
                refused = await check_login(client, where)
            if refused is not None:
                raise refused
            with RedisErrors(BrokerConnectionError, "cannot reach Redis at %s", where,
                             hint=_CHECK_ADDRESS):
                await client.ping()
        except BaseException:
            await client.aclose()
            raise
        return client


#: what a first connection that fails asks to check (a wrong port answers, e.g.
#: RabbitMQ's resets the connection, or nothing listens)
_CHECK_ADDRESS = ("check that Redis listens at that host and port (6379 unless the server "
                  "was set otherwise)")


class Producer(Protocol):
    """What a broker sends its enqueues through: `HeldConnection` on one server,
    `cluster.ClusterProducer` on a cluster (`make_producer`)."""

    async def execute_command(self, *args: Any, **options: Any) -> Any: ...

    async def execute_with_head(self, head: CommandHead, tail: Sequence[Any]) -> Any: ...

    async def release(self) -> None: ...


def make_producer(client: AnyRedis, spin: float) -> Producer:
    """The producer for `client`: a connection of its own beside a one-server client's pool
    (`HeldConnection`), or the cluster client itself, which picks each script's node."""
    if isinstance(client, RedisCluster):
        return ClusterProducer(client)
    return HeldConnection(client, spin)
