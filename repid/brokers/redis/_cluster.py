"""Redis Cluster: the client for `redis+cluster://host:port,host:port,.../` DSNs.

`make_client` (`_client.py`) hands a DSN here when its scheme is `redis+cluster` (or
`rediss+cluster`, over TLS), or when the broker was given `cluster=True` with a plain
`redis://` / `rediss://` DSN. The client is redis-py's `redis.asyncio.cluster.RedisCluster`:
it learns which node owns which of the 16384 slots from the nodes the DSN lists (any one
that answers is enough), sends each command to the owner of its key's slot, follows
MOVED/ASK redirections, and refreshes its map of the cluster after a connection error.

What keeps the brokers correct on a cluster is the key layout (`_keys.py`): every key of a
queue carries the hash tag `{<queue>}`, so a queue lives in one slot, and every script of
a queue (its keys are all it touches) runs on the node that owns it. The one key outside a
queue's slot is the index of queue names, which no script reads (`_registry.py`).

Differences from the one-server client, each one redis-py's cluster client's:

- only database 0 (a cluster has no other); a DSN with another path is refused;
- `max_connections` (default 256) bounds the connections to each node, and a command past
  it fails at once (`MaxConnectionsError`) instead of waiting: `pool_timeout` and
  `connection_pool` do not apply, and are refused with a reason;
- `retries` is the cluster client's: a command that met a dropped connection, a node
  that went down (`CLUSTERDOWN`) or a slot without an owner is sent again after a
  jittered backoff and a refresh of the slot map.

A login Redis refuses fails at once (the login is checked on the first node the DSN lists
that answers, as on one server: `_client.check_pool_login`). The DSN is only ever shown
masked (`repid.brokers._dsn.mask_dsn`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import RedisClusterException

from repid.brokers._dsn import mask_dsn
from repid.brokers.redis._options import client_options
from repid.errors import BrokerConnectionError

#: the DSN schemes of a Redis Cluster (plain TCP, TLS)
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
#: options of the one-server client that redis-py's cluster client does not have
_NOT_FOR_CLUSTER = {
    "pool_timeout": "a cluster client does not wait for a free connection: it opens up to "
                    "max_connections per node and fails a command past that",
    "connection_pool": "a cluster client keeps one pool per node; give max_connections "
                       "(per node) instead",
}


def is_cluster_dsn(dsn: str) -> bool:
    """Whether `dsn` names a Redis Cluster (`redis+cluster://` or `rediss+cluster://`)."""
    return dsn.split("://", 1)[0].lower() in CLUSTER_SCHEMES


@dataclass(frozen=True)
class ClusterDsn:
    """A cluster DSN taken apart: the nodes to start from and the client options it gives
    (user, password, TLS, query-string options)."""

    nodes: tuple[tuple[str, int], ...]
    options: dict[str, Any]


def parse_cluster_dsn(dsn: str) -> ClusterDsn:
    """Take `dsn` apart: `redis+cluster://[user:password@]host:port[,host:port...]/[0][?...]`,
    or a plain `redis://` / `rediss://` DSN (one node to start from). ValueError, the DSN
    masked, when it names no node, a port that is not a number, or a database other than 0."""
    where = mask_dsn(dsn)
    scheme, sep, rest = dsn.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in (*CLUSTER_SCHEMES, "redis", "rediss"):
        raise ValueError(f"{where} is not a Redis Cluster DSN; write "
                         "redis+cluster://host:port,host:port/ (rediss+cluster:// for TLS)")
    tls = scheme.startswith("rediss")
    netloc, slash, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    if not slash and "?" in netloc:
        netloc, _, query = netloc.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    nodes = tuple(_node(host, where) for host in hosts.split(",") if host.strip())
    if not nodes:
        raise ValueError(f"the DSN {where} names no node of the cluster; list at least one "
                         "as host:port (redis+cluster://10.0.0.1:7000,10.0.0.2:7000/)")
    if path.strip("/") not in ("", "0"):
        raise ValueError(f"the DSN {where} selects database {path.strip('/')!r}, but a Redis "
                         "Cluster has only database 0; end the DSN with / or /0")
    # redis-py reads the user, password and query options; the nodes come from above
    first = f"{'rediss' if tls else 'redis'}://{userinfo}{at}{hosts.split(',')[0]}/"
    options: dict[str, Any] = dict(parse_url(f"{first}?{query}" if query else first))
    for name in ("host", "port", "db", "path"):
        options.pop(name, None)
    if options.pop("connection_class", None) is SSLConnection or tls:
        options["ssl"] = True
    return ClusterDsn(nodes, options)


def _node(text: str, where: str) -> tuple[str, int]:
    """`host:port` (or `[v6 address]:port`; port 6379 when not given) as a pair."""
    try:
        parts = urlsplit(f"//{text.strip()}")
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ValueError(f"the DSN {where} has a node {text.strip()!r} whose port is not a "
                         "number; write host:port") from None
    if not host:
        raise ValueError(f"the DSN {where} has a node without a host; write host:port")
    return host, port or 6379


def make_cluster_client(dsn: str, *, retries: int, socket_timeout: float | None,
                        socket_connect_timeout: float | None, client_name: str | None,
                        extra: dict[str, Any], max_connections: int) -> RedisCluster:
    """A cluster client for `dsn` (see the module docstring). Options in the DSN's query
    string take precedence over the keyword arguments, as on one server; `extra` are
    redis-py options (`cluster` already removed; a `max_connections` there overrides the
    default given as `max_connections`)."""
    for name, why in _NOT_FOR_CLUSTER.items():
        if name in extra:
            raise ValueError(f"{name} does not apply to a Redis Cluster ({mask_dsn(dsn)}): "
                             f"{why}")
    parsed = parse_cluster_dsn(dsn)
    options = client_options(retries=retries, socket_timeout=socket_timeout,
                             socket_connect_timeout=socket_connect_timeout,
                             client_name=client_name)
    options["max_connections"] = max_connections
    options.update(extra)
    options.update(parsed.options)
    return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in parsed.nodes],
                        **options)


@dataclass(frozen=True)
class NodeLogin:
    """How to open one connection to one node: what `_client.check_pool_login` needs (a
    connection class and its keyword arguments, as a connection pool has them)."""

    connection_class: Any
    connection_kwargs: dict[str, Any]


def startup_logins(client: RedisCluster) -> list[NodeLogin]:
    """One `NodeLogin` per node the DSN lists, in its order (with the client's options)."""
    return [NodeLogin(node.connection_class, dict(node.connection_kwargs))
            for node in client.startup_nodes]


async def discover(client: RedisCluster, where: str) -> None:
    """Learn the cluster's slot map; BrokerConnectionError (the DSN masked) when no node the
    DSN lists answers, or the cluster does not serve every slot."""
    try:
        await client.initialize()
    except RedisClusterException as exc:
        raise BrokerConnectionError(
            f"cannot reach the Redis Cluster at {where}: {exc}. Check that the nodes the DSN "
            "lists run in cluster mode and that `redis-cli -p PORT cluster info` says "
            "cluster_state:ok") from exc


class ClusterProducer:
    """What the broker sends its enqueues through on a cluster: the cluster client itself
    (which picks the node from the script's keys), behind the methods of `HeldConnection`,
    so the broker and the scripts treat both alike."""

    __slots__ = ("_client",)

    def __init__(self, client: RedisCluster) -> None:
        self._client = client

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Send one command to the node owning its keys' slot; its reply."""
        return await self._client.execute_command(*args, **options)

    async def execute_with_head(self, head: Any, tail: Sequence[Any]) -> Any:
        """`execute_command(*head.args, *tail)` (`head` is a `_client.CommandHead`)."""
        return await self._client.execute_command(*head.args, *tail)

    async def release(self) -> None:
        """Nothing to close: the connections are the cluster client's."""
