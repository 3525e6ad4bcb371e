"""RedisMessageBroker behind Redis Sentinel, against a private master, replica and three
sentinels on this machine (`tests/servers/redis_sentinel.py`, ports 7200-7212): it connects
through the sentinels, follows a failover after the master is SIGKILLed while a worker
runs, and with `confirm_replicas=1` loses no job whose enqueue returned; a WAIT that
counts too few replicas makes the enqueue raise, saying why."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from redis_helpers import running, until

from repid import Connection, Job, RedisMessageBroker, Router, Worker
from repid.brokers.redis import RedisBucketBroker
from repid.data import ResultBucket
from repid.errors import BrokerConnectionError, EnqueueNotConfirmedError, QueueNotDeclaredError
from repid.queue import Queue
from tests.servers.redis_sentinel import SentinelGroup
from tests.servers.redis_server import PrivateRedis, available

pytestmark = pytest.mark.integration

BASE_PORT = 7200
#: a loopback port of this test's range nothing listens on: a sentinel that is down
DOWN_PORT = 7229
#: how long after the master's SIGKILL work may take to resume (measured: about 3 s)
RESUME_BOUND = 15.0


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    """One master, one replica and three sentinels for the module, stopped at its end."""
    why_not = available()
    if why_not is not None:
        message = f"{why_not}; install Redis to run the Sentinel tests"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true requires it)")
        pytest.skip(message)
    sentinels = SentinelGroup(BASE_PORT)
    sentinels.start()
    try:
        yield sentinels
    finally:
        sentinels.stop()


def _name(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def connection_to(dsn: str, **options: Any) -> AsyncIterator[Connection]:
    conn = Connection(RedisMessageBroker(dsn, lease_time=timedelta(seconds=3), retries=3,
                                         socket_timeout=2.0, socket_connect_timeout=1.0,
                                         **options))
    await asyncio.wait_for(conn.connect(), 10)
    try:
        yield conn
    finally:
        await asyncio.wait_for(conn.disconnect(), 15)


def recorder(queue: str, ran: dict[str, float]) -> Router:
    """A router whose actor notes when each job `n` first ran."""
    router = Router()

    @router.actor(queue=queue)
    async def record(n: str) -> None:
        ran.setdefault(n, time.monotonic())

    return router


async def test_enqueue_consume_ack_through_sentinels(group: SentinelGroup) -> None:
    # the first sentinel listed is down: the client asks the next ones
    hosts = group.dsn.replace("redis+sentinel://", f"redis+sentinel://127.0.0.1:{DOWN_PORT},")
    queue = _name("q")
    ran: dict[str, float] = {}
    async with connection_to(hosts) as conn:
        await Queue(queue, _connection=conn).declare()
        try:
            for n in range(20):
                await Job("record", queue=queue, args={"n": str(n)}, _connection=conn).enqueue()
            # the enqueues (on the producer's own connection) and the counts (through the
            # pool) both reached the master the sentinels name
            assert (await conn.message_broker.queue_stats(queue))["ready"] == 20
            worker = Worker(routers=[recorder(queue, ran)], messages_limit=20,
                            graceful_shutdown_time=2, _connection=conn)
            await asyncio.wait_for(worker.run(), 15)
            assert set(ran) == {str(n) for n in range(20)}
            stats = await conn.message_broker.queue_stats(queue)
            assert stats == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0}
        finally:
            await Queue(queue, _connection=conn).delete()


async def test_buckets_through_sentinels(group: SentinelGroup) -> None:
    buckets = RedisBucketBroker(group.dsn, retries=3, socket_timeout=2.0)
    await asyncio.wait_for(buckets.connect(), 10)
    id_ = _name("bucket")
    now = datetime.now(timezone.utc)
    try:
        await buckets.store_bucket(id_, ResultBucket(
            data=42, success=True, started_when=now, finished_when=now,
            ttl=timedelta(minutes=1)))
        got = await buckets.get_bucket(id_)
        assert isinstance(got, ResultBucket) and got.data == 42
    finally:
        await buckets.delete_bucket(id_)
        await buckets.disconnect()


async def test_a_refused_connection_never_shows_the_passwords() -> None:
    broker = RedisMessageBroker(
        f"redis+sentinel://:m4ster-pw@127.0.0.1:{DOWN_PORT}/mymaster/0"
        "?sentinel_password=s3ntinel-pw", retries=0, socket_connect_timeout=0.5)
    assert "m4ster-pw" not in repr(broker)
    with pytest.raises(BrokerConnectionError) as caught:
        await asyncio.wait_for(broker.connect(), 10)
    text = str(caught.value)
    assert "mymaster" in text
    for secret in ("m4ster-pw", "s3ntinel-pw"):
        assert secret not in text
        assert secret not in repr(caught.value.__cause__)


async def test_too_few_replicas_make_the_enqueue_raise_saying_why(group: SentinelGroup) -> None:
    queue = _name("q")
    async with connection_to(group.dsn, confirm_replicas=1, replica_timeout=0.3) as one, \
            connection_to(group.dsn, confirm_replicas=2, replica_timeout=0.3) as two:
        await Queue(queue, _connection=one).declare()
        try:
            # one replica is there: confirmed
            await Job("record", queue=queue, args={"n": "a"}, _connection=one).enqueue()
            # two asked, one there: the master applied it, the enqueue says what is missing
            with pytest.raises(EnqueueNotConfirmedError) as caught:
                await asyncio.wait_for(
                    Job("record", queue=queue, args={"n": "b"}, _connection=two).enqueue(), 5)
            text = str(caught.value)
            assert "only 1 of the 2 replica(s)" in text
            assert "confirm_replicas=2" in text and "INFO replication" in text
            # the replica stops answering (shorter than the sentinels' down-after time)
            replica = group.replica()
            replica.pause()
            try:
                started = time.monotonic()
                with pytest.raises(EnqueueNotConfirmedError, match="only 0 of the 1"):
                    await asyncio.wait_for(
                        Job("record", queue=queue, args={"n": "c"}, _connection=one).enqueue(),
                        5)
                assert 0.25 < time.monotonic() - started < 2.0  # WAIT's 0.3 s, not more
            finally:
                replica.resume()
            await Job("record", queue=queue, args={"n": "d"}, _connection=one).enqueue()
            # every enqueue reached the master, confirmed or not
            assert (await one.message_broker.queue_stats(queue))["ready"] == 4
        finally:
            await Queue(queue, _connection=one).delete()


@pytest.mark.parametrize("confirm", [1, 0], ids=["confirm_replicas=1", "no-confirm"])
async def test_master_killed_under_a_worker_fails_over(group: SentinelGroup,
                                                       confirm: int) -> None:
    """SIGKILL the master while a producer and a worker run. The sentinels promote the
    replica; the clients find it by themselves. With confirm_replicas=1 a write needs a
    replica, so the killed server is started again (as a replica of the new master, as an
    operator would) once the failover happened; every job whose enqueue returned runs."""
    queue = _name("q")
    ran: dict[str, float] = {}
    confirmed: dict[str, float] = {}
    options = {"confirm_replicas": confirm} if confirm else {}
    async with connection_to(group.dsn, **options) as producer, \
            connection_to(group.dsn, **options) as conn:
        await Queue(queue, _connection=producer).declare()
        worker = Worker(routers=[recorder(queue, ran)], tasks_limit=20,
                        graceful_shutdown_time=2, _connection=conn)
        stop_producing = asyncio.Event()
        old: PrivateRedis | None = None

        async def produce() -> None:
            n = 0
            while not stop_producing.is_set():
                n += 1
                try:
                    await Job("record", queue=queue, args={"n": str(n)},
                              _connection=producer).enqueue()
                except (EnqueueNotConfirmedError, QueueNotDeclaredError):
                    await asyncio.sleep(0.05)  # not confirmed: not counted
                else:
                    confirmed[str(n)] = time.monotonic()
                await asyncio.sleep(0.005)

        try:
            async with running(worker):
                producing = asyncio.create_task(produce())
                await asyncio.sleep(1.0)
                assert confirmed, "nothing was enqueued before the kill"
                old = await asyncio.to_thread(group.kill_master)
                killed_at = time.monotonic()
                await asyncio.to_thread(group.wait_for_failover, old.port)
                promoted_at = time.monotonic()
                if confirm:
                    await asyncio.to_thread(group.rejoin, old)

                def resumed() -> bool:  # a job enqueued after the kill ran
                    return any(confirmed[n] > killed_at and n in ran for n in list(confirmed))

                await until(resumed, RESUME_BOUND, "work to resume after the failover")
                resumed_at = time.monotonic()
                await asyncio.sleep(0.5)
                stop_producing.set()
                await asyncio.wait_for(producing, 10)
                if confirm:
                    await until(lambda: set(confirmed) <= set(ran), 20,
                                "every confirmed job to run")
                print(f"\nconfirm_replicas={confirm}: {len(confirmed)} confirmed, "
                      f"{len(ran)} ran; promoted {promoted_at - killed_at:.1f} s and work "
                      f"resumed {resumed_at - killed_at:.1f} s after the kill")
            assert resumed_at - killed_at < RESUME_BOUND
        finally:
            if old is not None and not old.running:  # back as it was: master and replica
                await asyncio.to_thread(group.rejoin, old)
            await Queue(queue, _connection=producer).delete()
