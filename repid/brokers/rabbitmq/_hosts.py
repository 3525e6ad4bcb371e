"""The nodes of a RabbitMQ cluster one broker may connect to, and which one is in use.

A broker is given its nodes in one of two forms:

- one DSN naming several hosts, separated by commas, after one `user:password@`:
  `amqp://guest:guest@10.0.0.1:5672,10.0.0.2:5672,10.0.0.3/vhost?heartbeat=30` (a host
  without a port takes the scheme's default; IPv6 addresses in brackets);
- a list of DSNs, one per node (`["amqp://u:p@h1/", "amqp://u:p@h2/"]`), which may differ
  in credentials or options but must name the same virtual host.

`node_dsns` turns either into one single-host DSN per node, in the order given; a DSN with
one host is returned unchanged, character for character. A malformed host list is refused
with a `ValueError` that says which part is wrong and how to write it, showing the DSN with
its password masked. `HostRing` holds those DSNs and the one in use: connecting starts at
the first, and each failure moves on to the next, wrapping round (see `_failover.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

from repid.brokers._dsn import check_scheme, mask_dsn, require_dsn, split_netloc
from repid.brokers.rabbitmq._management import vhost_of

OWNER = "RabbitMessageBroker"
EXAMPLE = "amqp://guest:guest@localhost:5672/"
MULTI_EXAMPLE = "amqp://guest:guest@host1:5672,host2:5672,host3:5672/"


def _check_host(entry: str, dsn: str) -> None:
    """A `ValueError` unless `entry` is `host`, `host:port`, `[v6]` or `[v6]:port`."""
    def bad(why: str) -> ValueError:
        return ValueError(
            f"{OWNER}: the host list of {mask_dsn(dsn)!r} has {why}. Separate the hosts "
            f"with commas, each `host` or `host:port` (IPv6 in brackets), after one "
            f"`user:password@`, e.g. {MULTI_EXAMPLE!r}")

    if not entry.strip():
        raise bad("an empty host (two commas in a row, or a comma at an end)")
    if any(c.isspace() for c in entry):
        raise bad(f"a host with a space in it ({entry!r})")
    if entry.startswith("["):
        host, bracket, after = entry[1:].partition("]")
        if not bracket or not host or (after and not after.startswith(":")):
            raise bad(f"a malformed IPv6 host ({entry!r}); write it as [::1]:5672")
        port = after[1:] if after else None
    else:
        host, colon, rest = entry.partition(":")
        port = rest if colon else None
        if not host:
            raise bad(f"a port without a host ({entry!r})")
    if port is not None and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise bad(f"a bad port in {entry!r} (a number from 1 to 65535)")


def split_hosts(dsn: str) -> list[str]:
    """One single-host DSN per host named in `dsn`, in order; `[dsn]` unchanged when it
    names one host. A `ValueError` says what is wrong with a malformed host list."""
    parts = split_netloc(dsn)
    if parts is None:
        return [dsn]
    scheme, userinfo, hosts, rest = parts
    if "@" in userinfo[:-1] and "," in userinfo:
        raise ValueError(
            f"{OWNER}: a DSN names a user more than once (user:password@ after a comma). "
            f"One DSN with several hosts has one `user:password@` before all of them, e.g. "
            f"{MULTI_EXAMPLE!r}; for nodes with different credentials give a list of DSNs, "
            "one per node (an `@` inside a password is written %40)")
    if "," not in hosts:
        return [dsn]
    entries = hosts.split(",")
    for entry in entries:
        _check_host(entry, dsn)
    return [f"{scheme}{userinfo}{entry}{rest}" for entry in entries]


def node_dsns(dsn: str | Sequence[str]) -> tuple[str, ...]:
    """The DSN of each node `dsn` names (a DSN with one or several hosts, or a list of
    them), in order. A `ValueError` for a missing or malformed DSN, a DSN of another system,
    an empty list, or nodes naming different virtual hosts."""
    if isinstance(dsn, str) or dsn is None:
        given: list[object] = [dsn]
    else:
        given = list(dsn)
        if not given:
            raise ValueError(f"{OWNER} was given an empty list of DSNs; give at least one, "
                             f"e.g. [{EXAMPLE!r}]")
    nodes: list[str] = []
    for item in given:
        if not (isinstance(item, str) and item.strip()):
            require_dsn(item, OWNER, EXAMPLE)  # raises, saying what is missing
        assert isinstance(item, str)
        nodes.extend(split_hosts(item))
    for node in nodes:
        check_scheme(node, OWNER, EXAMPLE)
    vhosts = {vhost_of(node) for node in nodes}
    if len(vhosts) > 1:
        raise ValueError(
            f"{OWNER}: the DSNs of its nodes name different virtual hosts ({sorted(vhosts)}: "
            f"{describe(nodes)}); the nodes of one cluster share their virtual hosts, so "
            "give each DSN the same path")
    return tuple(nodes)


def describe(nodes: Sequence[str]) -> str:
    """The nodes' DSNs for a message or a log, passwords masked."""
    return ", ".join(mask_dsn(node) for node in nodes)


class HostRing:
    """The nodes' DSNs in order, and the one in use (or tried next), starting at the first.
    `advance()` moves to the next node, wrapping round; with one node it stays put."""

    __slots__ = ("_index", "nodes")

    def __init__(self, nodes: Sequence[str]) -> None:
        if not nodes:
            raise ValueError("a HostRing needs at least one node")
        self.nodes = tuple(nodes)
        self._index = 0

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def current(self) -> str:
        """The DSN of the node in use, or to be tried next."""
        return self.nodes[self._index]

    def advance(self) -> str:
        """Move to the next node (the first after the last); its DSN."""
        self._index = (self._index + 1) % len(self.nodes)
        return self.current
