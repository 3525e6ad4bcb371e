"""Writes confirmed by replicas (the Redis broker's `confirm_replicas`).

Redis replicates asynchronously: a write the master confirmed may not have reached any
replica yet, and if the master dies then, the replica promoted in its place never had it.
With `confirm_replicas=N`, every script run that stores or settles messages (ENQUEUE,
SETTLE) is followed, on the same connection and in the same round trip, by
`WAIT N timeout_ms`; the caller is answered only once N replicas acknowledged everything
that connection wrote, or gets `ReplicasNotConfirmedError` when fewer did within
`replica_timeout`. WAIT counts replicas that acknowledged this connection's last write
or a later one, so the write itself is among what they hold.

What it does not promise: a write that raised `ReplicasNotConfirmedError` was still
applied by the master (WAIT cannot undo it), so it may be there or not after a failover:
an enqueue that raised may be stored (its id makes a retry harmless), a settle that raised
may have happened. And WAIT is not a consensus: a replica that has the write can still
lose the election to one that has not (Sentinel promotes the replica with the most data
it knows of, so with one replica this does not arise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from repid.brokers.redis._client import AnyRedis, CommandHead

#: the commands whose writes are confirmed (the scripts, run by their SHA1 or source)
_CONFIRMED = ("EVALSHA", "EVAL")


#: why a Redis Cluster client gets no `confirm_replicas`
CLUSTER_REFUSED = (
    "confirm_replicas works with one Redis server or with Redis behind Sentinel, not with "
    "Redis Cluster (WAIT would run on another node than the write); remove "
    "confirm_replicas, or connect with a redis:// or redis+sentinel:// DSN")


class ReplicasNotConfirmedError(RedisConnectionError):
    """The master applied a write, but fewer replicas than `confirm_replicas` acknowledged
    it within `replica_timeout`. A redis-py connection error, so the broker maps it like a
    Redis that did not answer: an enqueue raises `EnqueueNotConfirmedError`, a settle
    `BrokerConnectionError`, each with this message after its own."""


@dataclass(frozen=True)
class ReplicaConfirmation:
    """How many replicas must acknowledge a write (`replicas`), within how many seconds
    (`timeout`)."""

    replicas: int
    timeout: float

    @classmethod
    def of(cls, replicas: int, timeout: float,
           socket_timeout: float | None) -> ReplicaConfirmation | None:
        """The confirmation the broker's settings ask for, None for `replicas=0` (no
        WAIT); ValueError saying what to give for settings that cannot work."""
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ValueError(f"confirm_replicas is {replicas!r}; give 0 (no confirmation, "
                             "the default) or the number of replicas that must have each "
                             "write")
        if replicas == 0:
            return None
        if not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"replica_timeout is {timeout!r}; give a number of seconds "
                             "above 0 (WAIT 0 would wait for ever)")
        if socket_timeout is not None and timeout >= socket_timeout:
            raise ValueError(
                f"replica_timeout ({timeout} s) must be shorter than socket_timeout "
                f"({socket_timeout} s), or the connection times out before Redis answers "
                "how many replicas have the write; lower replica_timeout or raise "
                "socket_timeout")
        return cls(replicas, float(timeout))

    @property
    def timeout_ms(self) -> int:
        """The timeout as WAIT takes it (milliseconds, at least 1)."""
        return max(1, round(self.timeout * 1000))

    def shortfall(self, acknowledged: int) -> ReplicasNotConfirmedError:
        """The error of a WAIT that answered `acknowledged` (fewer than `replicas`)."""
        return ReplicasNotConfirmedError(
            f"the master applied the write, but only {acknowledged} of the "
            f"{self.replicas} replica(s) asked for (confirm_replicas={self.replicas}) "
            f"acknowledged it within replica_timeout={self.timeout} s, so a failover now "
            "could lose it. Check that the replicas are up and connected to the master "
            "(INFO replication on the master: connected_slaves and each replica's lag) and "
            "that confirm_replicas is not more than the replicas there are; or raise "
            "replica_timeout")


class ConfirmedWrites:
    """What the broker sends its ENQUEUE and SETTLE runs through when `confirm_replicas`
    is set (a `_client.Producer`, in place of its `HeldConnection`): each script run
    (EVALSHA, or EVAL) and a WAIT after it, pipelined on one connection of the client's
    pool (WAIT only counts the writes of its own connection); any other command is sent as
    usual. Its reply is the script's; a WAIT that counts too few replicas raises
    `ReplicasNotConfirmedError`."""

    __slots__ = ("_confirmation", "_redis")

    def __init__(self, client: AnyRedis, confirmation: ReplicaConfirmation) -> None:
        if not isinstance(client, Redis):
            raise ValueError(CLUSTER_REFUSED)
        self._redis = client
        self._confirmation = confirmation

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run a command; a script run is confirmed by replicas (see the class)."""
        if args and args[0] in _CONFIRMED:
            return await self._confirmed(args, options)
        return await self._redis.execute_command(*args, **options)  # type: ignore[no-untyped-call]

    async def execute_with_head(self, head: CommandHead, tail: Sequence[Any]) -> Any:
        """`execute_command(*head.args, *tail)`."""
        return await self.execute_command(*head.args, *tail)

    async def _confirmed(self, args: Sequence[Any], options: dict[str, Any]) -> Any:
        confirmation = self._confirmation
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.execute_command(*args, **options)
            pipe.execute_command("WAIT", confirmation.replicas, confirmation.timeout_ms)
            reply, acknowledged = await pipe.execute()
        if int(acknowledged) < confirmation.replicas:
            raise confirmation.shortfall(int(acknowledged))
        return reply

    async def release(self) -> None:
        """Nothing to close: the connections are the pool's."""
        return None
