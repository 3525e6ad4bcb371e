"""Failover between RabbitMQ nodes: a broker given several nodes connects to the first that
answers, moves to the next when its node goes away, and its consumers resume there.

Without a cluster (fast, on the shared server and a loopback port nothing listens on):
connecting skips a dead first node, a connect that reaches no node names every node (and
no password), and a lost connection tries the next node, wraps round and resumes.

With a private three-node cluster (`tests/servers/rabbit_cluster.py`, marked `cluster`:
the cluster takes ~25-40 s to start here): a producer and two `repid.Worker`s run while
the node they are connected to (for quorum queues, the one holding the queue's leader) is
stopped; every job whose enqueue was confirmed runs, work resumes within 10 s, and a new
broker whose first node is the stopped one connects to the next.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest
from rabbit_helpers import drop_connections, key, params, take, unique

from repid import Connection, Job, Router, Worker
from repid.brokers._dsn import mask_dsn
from repid.brokers.rabbitmq import RabbitMessageBroker
from repid.errors import BrokerConnectionError, EnqueueNotConfirmedError
from tests.servers.rabbit_cluster import PrivateRabbitCluster, available

pytestmark = pytest.mark.integration

IN_CI = os.environ.get("CI", "").lower() == "true"
#: a loopback port of this suite's range that nothing listens on
DEAD_PORT = 5719
#: work must resume within this many seconds of a node being stopped
RESUME_LIMIT = 10.0
QUORUM = "queue_type" in inspect.signature(RabbitMessageBroker.__init__).parameters


def on_port(dsn: str, port: int, password: str | None = None) -> str:
    """`dsn` pointed at 127.0.0.1:`port` (with `password` instead of its own, if given)."""
    parts = urlsplit(dsn)
    user = parts.username or "guest"
    secret = password if password is not None else (parts.password or "guest")
    return parts._replace(netloc=f"{user}:{secret}@127.0.0.1:{port}").geturl()




# --- several nodes, without a cluster ---


async def test_connect_skips_a_dead_first_node(amqp_dsn: str) -> None:
    b = RabbitMessageBroker([on_port(amqp_dsn, DEAD_PORT), amqp_dsn], operation_timeout=5)
    started = time.monotonic()
    await asyncio.wait_for(b.connect(), 20)
    try:
        assert time.monotonic() - started < 10
        q = unique("failover")
        await b.queue_declare(q)
        await b.enqueue(key(q, "one"), "x", params())
        c = b.consume(q, max_unacked_messages=5)
        k, _, _ = await take(c)
        assert k.id_ == "one"
        await b.ack(k)
        await c.finish()
        await b.queue_delete(q)
    finally:
        await b.disconnect()


async def test_connecting_to_no_node_names_each_node_and_no_password() -> None:
    dsn = f"amqp://guest:s3cret@127.0.0.1:{DEAD_PORT},127.0.0.1:{DEAD_PORT - 1}/"
    b = RabbitMessageBroker(dsn, operation_timeout=3)
    assert "s3cret" not in repr(b)
    with pytest.raises(BrokerConnectionError) as info:
        await asyncio.wait_for(b.connect(), 20)
    message = str(info.value)
    assert message.startswith("cannot connect to any of the 2 RabbitMQ nodes")
    assert f"127.0.0.1:{DEAD_PORT}/" in message and f"127.0.0.1:{DEAD_PORT - 1}/" in message
    assert "s3cret" not in message


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None,
                    reason="needs rabbitmqctl to drop connections")
async def test_a_lost_connection_tries_the_next_node_and_wraps_round(
        amqp_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    """The shared server first, a dead port second: a drop moves to the dead node, whose
    attempt fails and moves back; the producer and the consumer carry on."""
    caplog.set_level(logging.INFO, logger="repid.brokers.rabbitmq")
    name = unique("failover-conn")
    b = RabbitMessageBroker([amqp_dsn, on_port(amqp_dsn, DEAD_PORT)], connection_name=name,
                            reconnect_interval=0.3, operation_timeout=5, publish_timeout=5)
    await asyncio.wait_for(b.connect(), 20)
    q = unique("failover")
    try:
        await b.queue_declare(q)
        c = b.consume(q, max_unacked_messages=5)
        await c.start()
        assert drop_connections(name) == 1
        deadline = time.monotonic() + 15
        while True:
            try:
                await asyncio.wait_for(b.enqueue(key(q, "after"), "x", params()), 5)
                break
            except (ConnectionError, asyncio.TimeoutError):
                assert time.monotonic() < deadline, "no enqueue confirmed after the drop"
                await asyncio.sleep(0.2)
        k, _, _ = await take(c, 15)  # the consumer resumed by itself
        assert k.id_ == "after"
        await b.ack(k)
        await c.finish()
        logged = [r.getMessage() for r in caplog.records
                  if r.name == "repid.brokers.rabbitmq"]
        assert any(f"127.0.0.1:{DEAD_PORT}/ next" in m for m in logged), logged
        assert all("guest:guest" not in m for m in logged)
    finally:
        await b.queue_delete(q)
        await b.disconnect()


async def test_a_refused_publish_moves_publishing_to_a_new_channel(
        amqp_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    """A nack can stick to a channel (RabbitMQ 3.10, a quorum queue's leader moving while
    the channel was reopened on another node): after one, the broker publishes on a new
    channel, at most once per second. Here a queue that refuses every message (no room,
    `x-overflow: reject-publish`) provokes the nack."""
    caplog.set_level(logging.INFO, logger="repid.brokers.rabbitmq")
    full, ok = unique("failover-full"), unique("failover")
    raw = await aio_pika.connect(amqp_dsn)
    b = RabbitMessageBroker(amqp_dsn, operation_timeout=5, publish_timeout=5)
    try:
        channel = await raw.channel()
        await channel.declare_queue(full, durable=True, arguments={
            "x-max-length": 0, "x-overflow": "reject-publish"})
        await b.connect()
        await b.queue_declare(ok)
        with pytest.raises(EnqueueNotConfirmedError, match="refused to store"):
            await asyncio.wait_for(b.enqueue(key(full), "x", params()), 10)
        await asyncio.sleep(0.3)  # the new channel opens in the background
        renewed = [r for r in caplog.records if "on a new channel" in r.getMessage()]
        assert len(renewed) == 1
        await asyncio.wait_for(b.enqueue(key(ok, "next"), "x", params()), 10)
        with pytest.raises(EnqueueNotConfirmedError):
            await asyncio.wait_for(b.enqueue(key(full), "x", params()), 10)
        await asyncio.sleep(0.3)
        assert len([r for r in caplog.records if "on a new channel" in r.getMessage()]) == 1
        assert (await b.queue_stats(ok))["ready"] == 1
    finally:
        await b.queue_delete(ok)
        await b.disconnect()
        channel = await raw.channel()
        await channel.queue_delete(full)
        await raw.close()


# --- a three-node cluster ---


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateRabbitCluster]:
    """A private three-node cluster for this module; stopped and deleted at the end, even
    when a test fails. A test that stops a node starts it again before it ends."""
    why_not = available()
    if why_not is not None:
        if IN_CI:
            pytest.fail(f"{why_not}; CI=true requires a RabbitMQ server installation")
        pytest.skip(f"{why_not}; install RabbitMQ to run the cluster tests")
    with PrivateRabbitCluster() as running:
        print(f"cluster started in {running.start_seconds:.1f} s")
        yield running


def cluster_broker(dsn: str | list[str], queue_type: str, name: str) -> RabbitMessageBroker:
    extra: dict[str, Any] = {"queue_type": queue_type} if queue_type != "classic" else {}
    return RabbitMessageBroker(dsn, connection_name=name, reconnect_interval=0.5,
                               operation_timeout=5, publish_timeout=5, **extra)


class Producer:
    """Enqueues job after job until stopped; remembers when each was confirmed."""

    def __init__(self, conn: Connection, queue: str) -> None:
        self.conn, self.queue = conn, queue
        self.confirmed: dict[int, float] = {}
        self.unconfirmed = 0
        self.errors: list[str] = []
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            job = Job("work", queue=self.queue, args={"n": n}, _connection=self.conn)
            try:
                await asyncio.wait_for(job.enqueue(), 8)
                self.confirmed[n] = time.monotonic()
            except (ConnectionError, asyncio.TimeoutError) as exc:
                self.unconfirmed += 1  # may or may not be stored: not counted
                self.errors.append(f"{time.monotonic():.1f} {type(exc).__name__}: {exc}")
                await asyncio.sleep(0.1)
            n += 1
            await asyncio.sleep(0.02)


async def until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.mark.cluster
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("queue_type", "how"), [
    ("classic", "stop"),
    pytest.param("quorum", "stop", marks=pytest.mark.skipif(
        not QUORUM, reason="RabbitMessageBroker has no queue_type option yet")),
    pytest.param("quorum", "kill", marks=pytest.mark.skipif(
        not QUORUM, reason="RabbitMessageBroker has no queue_type option yet")),
])
async def test_losing_a_node_loses_nothing_confirmed_and_work_resumes(
        cluster: PrivateRabbitCluster, queue_type: str, how: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """`stop`: the node shuts down cleanly (`rabbitmqctl stop`); `kill`: SIGKILL."""
    caplog.set_level(logging.INFO, logger="repid.brokers.rabbitmq")
    q = f"failover-{queue_type}-{uuid.uuid4().hex[:8]}"
    if queue_type == "classic":
        # A classic queue lives on one node: on node 3, which stays up; the clients start
        # on node 1, which is stopped.
        declarer = cluster_broker(cluster.dsns[2], queue_type, "declarer")
        await asyncio.wait_for(declarer.connect(), 20)
        await declarer.queue_declare(q)
        await declarer.disconnect()
        stopped = 0
    else:
        # A quorum queue's leader starts on the node that declares it; stop that node.
        declarer = cluster_broker(cluster.dsns[0], queue_type, "declarer")
        await asyncio.wait_for(declarer.connect(), 20)
        await declarer.queue_declare(q)
        await declarer.disconnect()
        stopped = await asyncio.to_thread(cluster.leader_of, q)
        types = await asyncio.to_thread(cluster.nodes[stopped].ctl, "list_queues", "-q",
                                         "--no-table-headers", "name", "type")
        assert f"{q}\tquorum" in types
    # the clients' first node is the one to be stopped
    order = cluster.dsns[stopped:] + cluster.dsns[:stopped]

    ran: dict[int, float] = {}
    router = Router()

    @router.actor(name="work", queue=q)
    async def work(n: int) -> None:
        ran.setdefault(n, time.monotonic())

    producer_conn = Connection(cluster_broker(order, queue_type, "producer"))
    worker_conns = [Connection(cluster_broker(order, queue_type, f"worker-{i}"))
                    for i in range(2)]
    for conn in (producer_conn, *worker_conns):
        await asyncio.wait_for(conn.connect(), 20)
    workers = [Worker(routers=[router], _connection=conn, tasks_limit=20,
                      graceful_shutdown_time=2, handle_signals=[]) for conn in worker_conns]
    producer = Producer(producer_conn, q)
    tasks = [asyncio.create_task(w.run()) for w in workers]
    producing = asyncio.create_task(producer.run())
    node_down = False
    try:
        await until(lambda: len(ran) >= 20, 20, "jobs to run before the stop")
        stop_began = time.monotonic()
        node_down = True
        await asyncio.to_thread(cluster.stop_node if how == "stop" else cluster.kill_node,
                                stopped)
        stop_done = time.monotonic()

        def resumed() -> float | None:
            after = [ran[n] for n, at in producer.confirmed.items()
                     if at > stop_done and n in ran]
            return min(after) if after else None

        try:
            await until(lambda: resumed() is not None, 30, "work to resume after the stop")
        except AssertionError as exc:
            up = (stopped + 1) % len(cluster.nodes)
            queues = await asyncio.to_thread(
                cluster.nodes[up].ctl, "list_queues", "name", "type", "leader",
                "messages_ready", "messages_unacknowledged", "consumers")
            health = [w.health_problem(after=0) for w in workers]
            raise AssertionError(f"{exc}; {len(producer.confirmed)} confirmed, "
                                 f"{len(ran)} ran; the producer's errors: "
                                 f"{producer.errors[-5:]}; workers' health: {health}; "
                                 f"queues:\n{queues}") from None
        resume_seconds = (resumed() or 0.0) - stop_began
        await asyncio.sleep(2)  # a little more work on the new node
        producer.stopping.set()
        await asyncio.wait_for(producing, 15)
        confirmed = set(producer.confirmed)
        await until(lambda: confirmed <= set(ran), 30, "every confirmed job to run")

        # a new broker whose first node is down connects to the next one
        late = cluster_broker(order, queue_type, "late")
        await asyncio.wait_for(late.connect(), 20)
        stats = await late.queue_stats(q)
        await late.disconnect()

        # from the last run before the stop on, the longest time without a run
        times = sorted([max(t for t in ran.values() if t < stop_began),
                        *(t for t in ran.values() if t >= stop_began)])
        longest_gap = max(b - a for a, b in itertools.pairwise(times))
        print(f"{queue_type}, {how}: node {stopped + 1} down in {stop_done - stop_began:.1f} s, "
              f"work resumed {resume_seconds:.1f} s after the stop began, longest pause "
              f"between two runs {longest_gap:.1f} s; "
              f"{len(confirmed)} confirmed, {producer.unconfirmed} unconfirmed, "
              f"{len(ran)} ran")
        assert not confirmed - set(ran)  # nothing confirmed is lost
        assert resume_seconds <= RESUME_LIMIT and longest_gap <= RESUME_LIMIT
        assert stats["ready"] == 0 and stats["dead"] == 0
        assert all(w.runner is not None and w.runner.processed > 0 for w in workers)
        # the clients were on the stopped node, and moved on to the next
        moved = [r.getMessage() for r in caplog.records if r.name == "repid.brokers.rabbitmq"
                 and f"trying {mask_dsn(order[1])} next" in r.getMessage()]
        assert len(moved) >= 3, "the producer and both workers failed over"
    finally:
        producer.stopping.set()
        for w in workers:
            w.stop()
        await asyncio.wait_for(asyncio.gather(producing, *tasks, return_exceptions=True), 30)
        for conn in (producer_conn, *worker_conns):
            await asyncio.wait_for(conn.disconnect(), 15)
        if node_down:
            await asyncio.to_thread(cluster.start_node, stopped)
