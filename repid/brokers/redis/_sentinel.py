"""Redis behind Sentinel: the `redis+sentinel://` DSN and a connection pool that follows
failovers.

The DSN names the sentinels, then the service (the master's name in the sentinels'
configuration), then optionally the database number::

    redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB][?OPTIONS]

- each HOST[:PORT] is a sentinel (port 26379 when omitted); at least one is needed, and
  listing them all lets the client ask the next one when one is down;
- USER and PASSWORD are those of the Redis master and replicas (percent-encode `@`, `:`
  and `/`), not of the sentinels;
- `?sentinel_username=...&sentinel_password=...` log in to sentinels that have their own
  credentials (`requirepass` in sentinel.conf); any other query option is a redis-py
  connection option for the master, as in a `redis://` DSN (`?socket_timeout=2`).

How a failover is followed: every connection asks the sentinels for the master's address
when it connects (redis-py's `SentinelConnectionPool`), so a command that fails because
the master died is retried by the client's `Retry` on a new connection, which goes to
whichever server the sentinels name then. A demoted master that is still up answers a write
with READONLY; redis-py turns that into a connection error, so that command is retried
the same way. Between the master's death and the sentinels' promotion of a replica
(`down-after-milliseconds` plus the election, usually a few seconds) no command can
succeed: the caller sees the client's usual connection error once its retries are spent,
and repid's consumers keep retrying until the new master answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from repid.brokers._dsn import mask_dsn

#: the DSN scheme of Redis behind Sentinel
SCHEME = "redis+sentinel"
#: a sentinel's port when the DSN gives none
DEFAULT_SENTINEL_PORT = 26379
#: query options of the DSN that are for the sentinels, not for the master
SENTINEL_OPTIONS = {"sentinel_username": "username", "sentinel_password": "password"}
#: the options of the master's connections the sentinels' connections share
_SHARED_OPTIONS = ("socket_timeout", "socket_connect_timeout", "socket_keepalive",
                   "socket_keepalive_options")

EXAMPLE = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/0"


def is_sentinel_dsn(dsn: str) -> bool:
    """Whether `dsn` is a `redis+sentinel://` DSN."""
    return dsn[:len(SCHEME) + 3].lower() == SCHEME + "://"


@dataclass(frozen=True)
class SentinelDsn:
    """What a `redis+sentinel://` DSN says (see the module docstring)."""

    #: (host, port) of each sentinel, in the DSN's order
    sentinels: tuple[tuple[str, int], ...]
    #: the name the sentinels know the master by
    service: str
    #: redis-py options of the master's connections: db, username, password, query options
    options: dict[str, Any]
    #: redis-py options of the sentinels' connections (their username and password)
    sentinel_options: dict[str, Any]


def _bad(dsn: str, why: str) -> ValueError:
    return ValueError(
        f"the Redis Sentinel DSN {mask_dsn(dsn)!r} {why}; write it as "
        "redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB], "
        f"e.g. {EXAMPLE!r}")


def _address(dsn: str, text: str) -> tuple[str, int]:
    """One `host[:port]` of the DSN (an IPv6 host in brackets)."""
    host, port = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise _bad(dsn, f"has an unclosed '[' in the sentinel address {text!r}")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise _bad(dsn, f"has a bad sentinel address {text!r}")
        port = rest[1:]
    elif ":" in text:
        host, port = text.rsplit(":", 1)
    if not host:
        raise _bad(dsn, f"has a sentinel address without a host ({text!r})")
    if not port:
        return host, DEFAULT_SENTINEL_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise _bad(dsn, f"has a bad port in the sentinel address {text!r}")
    return host, int(port)


def parse_sentinel_dsn(dsn: str) -> SentinelDsn:
    """The parts of a `redis+sentinel://` DSN; ValueError (DSN masked) saying what is
    wrong with a malformed one."""
    if not is_sentinel_dsn(dsn):
        raise _bad(dsn, f"does not start with {SCHEME}://")
    try:
        parts = urlsplit(dsn)
    except ValueError as exc:  # an unclosed '[' of an IPv6 host, say
        raise _bad(dsn, f"cannot be parsed ({exc})") from None
    userinfo, _, hosts = parts.netloc.rpartition("@")
    if not hosts:
        raise _bad(dsn, "names no sentinel")
    sentinels = tuple(_address(dsn, item.strip()) for item in hosts.split(",") if item.strip())
    if not sentinels:
        raise _bad(dsn, "names no sentinel")
    path = [unquote(part) for part in parts.path.split("/") if part]
    if not path:
        raise _bad(dsn, "names no service (the master's name in the sentinels' "
                        "configuration)")
    if len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise _bad(dsn, "has a path other than /SERVICE or /SERVICE/DB")
    # redis-py reads the credentials and the query options, as for a redis:// DSN
    login = f"{userinfo}@" if userinfo else ""
    query = f"?{parts.query}" if parts.query else ""
    options: dict[str, Any] = dict(parse_url(f"redis://{login}sentinel{query}"))
    options.pop("host", None)
    options.pop("port", None)
    if len(path) == 2 and "db" not in options:
        options["db"] = int(path[1])
    sentinel_options = {name: options.pop(option)
                        for option, name in SENTINEL_OPTIONS.items() if option in options}
    return SentinelDsn(sentinels, path[0], options, sentinel_options)


class SentinelBlockingPool(SentinelConnectionPool, BlockingConnectionPool):
    """The master's connections: found through the sentinels (`SentinelConnectionPool`),
    at most `max_connections` of them, and a command waits up to `timeout` seconds for a
    free one (`BlockingConnectionPool`), as with a `redis://` DSN. Disconnecting the whole
    pool (closing the client) disconnects the sentinels' connections too."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        """Disconnect the pool's connections; with `inuse_connections` (the client is
        closing), the sentinels' as well (they reconnect if the pool is used again)."""
        await super().disconnect(inuse_connections)
        if inuse_connections:
            await self.sentinel_manager.aclose()


def sentinel_pool(dsn: str, options: dict[str, Any]) -> SentinelBlockingPool:
    """A pool of connections to the master of the `redis+sentinel://` `dsn`, with the
    redis-py `options` (the DSN's own options take precedence). The sentinels are asked
    with the same socket timeouts, and without retries: the next sentinel is asked
    instead."""
    parsed = parse_sentinel_dsn(dsn)
    merged = {**options, **parsed.options}
    shared = {name: merged[name] for name in _SHARED_OPTIONS if name in merged}
    if merged.get("client_name"):
        shared["client_name"] = merged["client_name"]
    sentinel = Sentinel(parsed.sentinels,
                        sentinel_kwargs={**shared, **parsed.sentinel_options})
    return SentinelBlockingPool(  # type: ignore[no-untyped-call]
        parsed.service, sentinel, is_master=True, **merged)
