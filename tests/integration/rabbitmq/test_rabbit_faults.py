"""RabbitMessageBroker under faults, on real RabbitMQ servers: deliveries counted across
dying workers, dead-letter reasons (poison included), lost state, a server stopped under
load, and settles that fail."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from rabbit_helpers import broker, drain, key, nothing_within, params, queue, take, unique

from repid import Connection, Job, Router, Worker
from repid.brokers._poison import PoisonKey
from repid.brokers.base import DEAD_REASON_HEADER
from repid.brokers.rabbitmq import RabbitMessageBroker
from repid.brokers.rabbitmq import _topology as topology
from repid.brokers.rabbitmq._codec import HEADER_PARAMS
from repid.brokers.rabbitmq._consumer import RabbitConsumer
from repid.data import MessageCategory, Parameters
from repid.errors import BrokerConnectionError, EnqueueNotConfirmedError, QueueNotDeclaredError
from tests.servers.rabbit_node import PrivateRabbit

pytestmark = pytest.mark.integration
__all__ = ["broker", "queue"]

EXIT_WORKER = Path(__file__).with_name("rabbit_exit_worker.py")


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


async def connected(dsn: str, **kwargs: Any) -> RabbitMessageBroker:
    b = RabbitMessageBroker(dsn, publish_timeout=5.0, operation_timeout=5.0,
                            reconnect_interval=0.3, **kwargs)
    await b.connect()
    return b


async def dead_amqp_messages(dsn: str, queue_name: str) -> list[aio_pika.IncomingMessage]:
    """Everything in `<queue>:dead`, read with basic.get and left there (the channel closes
    with them unacked)."""
    connection = await aio_pika.connect(dsn)
    try:
        channel = await connection.channel()
        dead = await channel.get_queue(f"{queue_name}:dead", ensure=False)
        out = []
        while (message := await dead.get(no_ack=False, fail=False)) is not None:
            out.append(message)
    finally:
        await connection.close()
    return out


# --- deliveries counted ---


async def test_only_unsettled_deliveries_are_counted(amqp_dsn: str, queue: str) -> None:
    first = await connected(amqp_dsn)
    await first.enqueue(key(queue, "m"), "body", params(headers={"h": "v"}))
    c = first.consume(queue, max_unacked_messages=5)
    k, _, _ = await take(c)
    assert first.delivery_count(k) == 1
    await first.disconnect()  # the connection closes with the message unsettled

    second = await connected(amqp_dsn)
    try:
        c = second.consume(queue, max_unacked_messages=5)
        k, body, p = await take(c)
        assert (k.id_, body, p.headers, second.delivery_count(k)) == ("m", "body", {"h": "v"}, 2)
        # returns on purpose do not count: reject, requeue, and finish's give-back
        await second.reject(k)
        k, _, p = await take(c)
        assert second.delivery_count(k) == 2
        await second.requeue(k, "body", p)
        k, _, p = await take(c)
        assert second.delivery_count(k) == 2
        await second.ack(k)
        # nor does finish() giving back what was prefetched but not handed out
        await second.enqueue(key(queue, "held"), "x", params())
        await second.enqueue(key(queue, "prefetched"), "x", params())
        k, _, _ = await take(c)
        await asyncio.sleep(0.3)  # "prefetched" reaches the buffer, not handed out
        await c.finish()
        await second.reject(k)
        c = second.consume(queue, max_unacked_messages=5)
        counts = {}
        for _ in range(2):
            k, _, _ = await take(c)
            counts[k.id_] = second.delivery_count(k)
            await second.ack(k)
        assert counts == {"held": 1, "prefetched": 1}
        await c.finish()
        assert (await second.queue_stats(queue))["ready"] == 0
    finally:
        await second.disconnect()


async def test_pause_gives_back_what_it_holds_and_resume_goes_on(
    broker: RabbitMessageBroker, queue: str,
) -> None:
    await broker.enqueue_many((key(queue, f"m{n}"), "x", params()) for n in range(4))
    c = broker.consume(queue, max_unacked_messages=10)
    running, _, _ = await take(c)
    await asyncio.sleep(0.3)  # the other three reach the buffer
    await c.pause()
    # only the handed-out message is held: the rest is back in the queue, uncounted
    assert (await broker.queue_stats(queue))["ready"] == 3
    await broker.enqueue(key(queue, "later"), "x", params())
    assert await nothing_within(c, 0.5)
    assert (await broker.queue_stats(queue))["ready"] == 4
    await broker.ack(running)
    await c.resume()
    counts = {}
    for _ in range(4):
        k, _, _ = await take(c)
        counts[k.id_] = broker.delivery_count(k)
        await broker.ack(k)
    assert counts == {"m1": 1, "m2": 1, "m3": 1, "later": 1}
    await c.finish()


async def test_a_later_dead_scan_takes_over_unsettled_reads(
    broker: RabbitMessageBroker, queue: str,
) -> None:
    await broker.enqueue(key(queue, "d"), "x", params())
    c = broker.consume(queue, max_unacked_messages=5)
    k, _, _ = await take(c)
    await broker.nack(k, "dead")
    await c.finish()
    (read_only,) = await drain(broker.consume(queue, category=MessageCategory.DEAD,
                                              stop_when_empty=True))
    (again,) = await drain(broker.consume(queue, category=MessageCategory.DEAD,
                                          stop_when_empty=True))
    assert again[0].id_ == read_only[0].id_ == "d"
    with pytest.raises(BrokerConnectionError):  # taken over by the later scan
        await broker.ack(read_only[0])
    await broker.ack(again[0])  # settled after its scan ended: still works
    assert (await broker.queue_stats(queue))["dead"] == 0


async def test_each_worker_killed_by_its_actor_sees_a_higher_count(
    amqp_dsn: str, broker: RabbitMessageBroker, queue: str, tmp_path: Path, spawn: Any,
) -> None:
    log = tmp_path / "counts.log"
    conn = Connection(broker)
    await conn.connect()
    await Job("crash", queue=queue, id_="crasher", _connection=conn).enqueue()
    for run in range(3):  # max_deliveries=3: three deliveries run the actor and die
        worker = spawn(EXIT_WORKER, amqp_dsn, queue, str(log), "3")
        code = await asyncio.to_thread(worker.wait, 15)
        assert code == 1, f"run {run}: the worker should have died in the actor"
    last = spawn(EXIT_WORKER, amqp_dsn, queue, str(log), "3")  # the fourth dead-letters it

    async def dead() -> bool:
        return (await broker.queue_stats(queue))["dead"] == 1

    await until(dead, 15, "the message in the dead-letter queue")
    last.send_signal(signal.SIGTERM)  # before the queue is deleted, which it would redeclare
    assert await asyncio.to_thread(last.wait, 15) == 0
    counts = [line.split() for line in log.read_text().splitlines()]
    assert counts == [["1", "crasher"], ["2", "crasher"], ["3", "crasher"], ["4", "crasher"]]
    (message,) = await drain(broker.consume(queue, category=MessageCategory.DEAD,
                                            stop_when_empty=True))
    assert message[0].id_ == "crasher"
    assert "delivered 4 times" in message[2].headers[DEAD_REASON_HEADER]
    await broker.ack(message[0])


# --- dead-letter reasons ---


async def test_nack_reason_reaches_the_dead_consumer(broker: RabbitMessageBroker,
                                                     queue: str) -> None:
    await broker.enqueue(key(queue, "why"), "a", params(headers={"h": "1"}))
    await broker.enqueue(key(queue, "plain"), "b", params())
    await broker.enqueue(key(queue, "later"), "c", params(delay=60))
    c = broker.consume(queue, max_unacked_messages=5)
    for _ in range(2):
        k, _, _ = await take(c)
        await broker.nack(k, "because é" if k.id_ == "why" else None)
    await c.finish()
    (k, _, _), = await drain(broker.consume(queue, category=MessageCategory.DELAYED,
                                            stop_when_empty=True))
    await broker.nack(k, "x" * 10_000)  # a long reason is cut to fit an AMQP frame
    read = await drain(broker.consume(queue, category=MessageCategory.DEAD, stop_when_empty=True))
    dead = {k.id_: (body, p.headers) for k, body, p in read}
    for k, _, _ in read:
        await broker.reject(k)  # it stays dead
    assert dead["why"] == ("a", {"h": "1", DEAD_REASON_HEADER: "because é"})
    assert dead["plain"] == ("b", {})
    assert dead["later"][1][DEAD_REASON_HEADER].startswith("xxx")
    assert len(dead["later"][1][DEAD_REASON_HEADER]) < 10_000
    assert (await broker.queue_stats(queue))["dead"] == 3


async def test_bad_messages_each_dead_lettered_alone_with_reason_good_ones_run(
    amqp_dsn: str, broker: RabbitMessageBroker, queue: str,
) -> None:
    good_params = Parameters().encode()
    huge_ttl = json.loads(good_params) | {"ttl": 1e300}
    nested = "[" * 100_000 + "]" * 100_000
    bad: dict[str, tuple[bytes, str, str]] = {  # id: body, params header, reason fragment
        "not-utf8": (b"\xff\xfe{}", good_params, "not UTF-8"),
        "bad-json": (b"{}", "{not json", "not JSON"),
        "huge-ttl": (b"{}", json.dumps(huge_ttl), "OverflowError"),
        "nested": (nested.encode(), good_params, ""),
    }
    raw = await aio_pika.connect(amqp_dsn)
    try:
        channel = await raw.channel()
        for id_, (body, header, _) in bad.items():
            await channel.default_exchange.publish(aio_pika.Message(
                body, headers={HEADER_PARAMS: header}, correlation_id=id_, type="good",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue)
    finally:
        await raw.close()
    conn = Connection(broker)
    await conn.connect()
    ran: list[int] = []
    router = Router()

    @router.actor(queue=queue)
    async def good(n: int) -> None:
        ran.append(n)

    for n in range(20):
        await Job("good", queue=queue, args={"n": n}, _connection=conn).enqueue()
    worker = Worker(routers=[router], handle_signals=[], graceful_shutdown_time=1.0,
                    _connection=conn)
    task = asyncio.create_task(worker.run())
    try:
        async def all_good_ran() -> bool:
            return sorted(ran) == list(range(20))

        await until(all_good_ran, 10, "the good jobs")

        async def four_dead() -> bool:
            return (await broker.queue_stats(queue))["dead"] == 4

        await until(four_dead, 10, "four dead messages")
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)
    dead = {m.correlation_id: m for m in await dead_amqp_messages(amqp_dsn, queue)}
    assert sorted(dead) == sorted(bad)  # each alone, once
    for id_, (body, _, fragment) in bad.items():
        reason = dead[id_].headers[DEAD_REASON_HEADER]
        assert isinstance(reason, str) and reason and fragment in reason, (id_, reason)
        assert dead[id_].body == body
    # every one reads back through the DEAD consumer with its reason; those that cannot
    # be decoded as poison (to be deleted, never sent back)
    readable = await drain(broker.consume(queue, category=MessageCategory.DEAD,
                                          stop_when_empty=True))
    assert sorted((k.id_, bool(p.headers[DEAD_REASON_HEADER]), isinstance(k, PoisonKey))
                  for k, _, p in readable) == sorted(
        (id_, True, id_ != "nested") for id_ in bad)
    for dead_key, _, _ in readable:
        await broker.reject(dead_key)
    stats = await broker.queue_stats(queue)
    assert (stats["ready"], stats["dead"]) == (0, 4)


# --- settles that fail ---


async def test_failed_settles_free_the_consumer_and_leave_the_message_to_rabbitmq(
    broker: RabbitMessageBroker, queue: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = broker.consume(queue, max_unacked_messages=1)
    assert isinstance(c, RabbitConsumer)
    await broker.enqueue(key(queue, "m"), "x", params())
    k, payload, p = await take(c)

    async def refused(*args: Any, **kwargs: Any) -> None:
        raise EnqueueNotConfirmedError("RabbitMQ did not confirm (injected)")

    with monkeypatch.context() as patch:  # publishing fails; the consumer's channel works
        patch.setattr(broker, "_publish", refused)
        with pytest.raises(BrokerConnectionError, match="delivers it again"):
            await broker.requeue(k, payload, p)
        assert c._outstanding == 0
        # prefetch 1: taking again proves RabbitMQ has it back and the room is free
        k, _, _ = await take(c)
        assert broker.delivery_count(k) == 2  # it went back with basic.reject: counted
        with pytest.raises(BrokerConnectionError):
            await broker.nack(k, "reason")
        assert c._outstanding == 0
        k, _, _ = await take(c)
        # counted in this process; no counted copy can be stored while publishing fails
        assert broker.delivery_count(k) == 2
        await broker.reject(k)  # no copy stored: basic.reject returns it, no error
        assert c._outstanding == 0
        k, _, _ = await take(c)
    # a settle on a channel that is gone: the room is freed, RabbitMQ redelivers it
    assert c._channel is not None
    underlay = await c._channel.get_underlay_channel()
    await underlay.close()
    with pytest.raises(BrokerConnectionError, match="delivers it again"):
        await broker.ack(k)
    assert c._outstanding == 0
    k, _, _ = await take(c, 10)  # the channel is reopened, the subscription resumed
    assert k.id_ == "m"
    await broker.ack(k)
    await c.finish()
    assert (await broker.queue_stats(queue))["ready"] == 0


# --- lost state ---


async def test_consumer_raises_queue_not_declared_and_resumes_once_declared(
    broker: RabbitMessageBroker, queue: str,
) -> None:
    c = broker.consume(queue, max_unacked_messages=5)
    await c.start()
    other = await connected(broker.dsn)
    try:
        await other.queue_delete(queue)  # deleted behind this broker's back
    finally:
        await other.disconnect()
    with pytest.raises(QueueNotDeclaredError):
        await take(c, 10)
    assert c.problem is not None and "does not exist" in c.problem[0]
    with pytest.raises(QueueNotDeclaredError):  # still gone: says so again
        await take(c)
    await broker.queue_declare(queue)
    await broker.enqueue(key(queue, "back"), "x", params())
    k, _, _ = await take(c)
    assert k.id_ == "back" and c.problem is None
    await broker.ack(k)
    await c.finish()


async def test_worker_declares_a_deleted_queue_again_and_runs_later_jobs(
    broker: RabbitMessageBroker, queue: str,
) -> None:
    conn = Connection(broker)
    await conn.connect()
    ran: list[int] = []
    router = Router()

    @router.actor(queue=queue)
    async def job(n: int) -> None:
        ran.append(n)

    worker = Worker(routers=[router], handle_signals=[], _connection=conn)
    task = asyncio.create_task(worker.run())
    try:
        await Job("job", queue=queue, args={"n": 0}, _connection=conn).enqueue()

        async def ran_first() -> bool:
            return ran == [0]

        await until(ran_first, 10, "the first job")
        other = await connected(broker.dsn)
        try:
            await other.queue_delete(queue)

            async def declared_again() -> bool:
                try:
                    await other.queue_stats(queue)
                except QueueNotDeclaredError:
                    return False
                return True

            await until(declared_again, 10, "the worker to declare the queue again")
        finally:
            await other.disconnect()
        for n in range(1, 6):
            await Job("job", queue=queue, args={"n": n}, _connection=conn).enqueue()
        await Job("job", queue=queue, args={"n": 6}, deferred_by=1, _connection=conn).enqueue()

        async def ran_all() -> bool:
            return sorted(ran) == list(range(7))

        await until(ran_all, 10, "the jobs enqueued after the queue came back")
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def on_private(private_rabbit: PrivateRabbit) -> AsyncIterator[PrivateRabbit]:
    """The private node, running again after the test whatever the test did to it."""
    yield private_rabbit
    try:
        private_rabbit.start_app()  # no-op when it is running
    except RuntimeError:
        private_rabbit.restart()


async def test_server_stopped_under_load_loses_no_confirmed_enqueue(
    on_private: PrivateRabbit,
) -> None:
    dsn = on_private.dsn
    producer = await connected(dsn)
    conn = Connection(await connected(dsn))
    q = unique("stop-app")
    await producer.queue_declare(q)
    ran: set[str] = set()
    ran_at: dict[str, float] = {}
    router = Router()

    @router.actor(queue=q)
    async def job(tag: str) -> None:
        ran.add(tag)
        ran_at.setdefault(tag, time.monotonic())

    confirmed: list[str] = []
    stop = asyncio.Event()

    async def produce() -> None:
        n = 0
        while not stop.is_set():
            tag = f"j{n}"
            try:
                await Job("job", queue=q, args={"tag": tag},
                          _connection=Connection(producer)).enqueue()
            except ConnectionError:
                await asyncio.sleep(0.1)  # not confirmed: it may or may not be stored
                continue
            confirmed.append(tag)
            n += 1
            await asyncio.sleep(0.005)

    worker = Worker(routers=[router], handle_signals=[], tasks_limit=20,
                    _connection=conn)
    work = asyncio.create_task(worker.run())
    prod = asyncio.create_task(produce())
    try:
        await asyncio.sleep(1.0)
        assert len(confirmed) > 10 and ran
        assert worker.runner is not None
        (consumer,) = worker.runner._consumers
        await asyncio.to_thread(on_private.stop_app)

        async def problem_reported() -> bool:
            return consumer.problem is not None

        await until(problem_reported, 5, "the consumer to report the outage")
        assert consumer.problem is not None and "RabbitMQ" in consumer.problem[0]
        await asyncio.sleep(1.0)
        await asyncio.to_thread(on_private.start_app)
        back = time.monotonic()
        before = len(confirmed)

        async def producing_again() -> bool:
            return len(confirmed) > before + 20

        await until(producing_again, 15, "the producer to enqueue again")

        async def problem_cleared() -> bool:
            return consumer.problem is None

        await until(problem_cleared, 10, "the consumer to clear its problem")
        stop.set()
        await prod
        wanted = set(confirmed)

        async def all_ran() -> bool:
            return wanted <= ran

        await until(all_ran, 15, f"every confirmed job to run ({len(wanted - ran)} left)")
        after = [t for t in ran_at.values() if t >= back]
        assert after and min(after) - back < 10, "the worker did not carry on"
        print(f"{len(wanted)} confirmed jobs ran; first run {min(after) - back:.2f} s "
              "after start_app")
    finally:
        stop.set()
        await asyncio.gather(prod, return_exceptions=True)
        worker.stop()
        await asyncio.wait_for(work, 20)
        await producer.queue_delete(q)
        await producer.disconnect()
        await conn.disconnect()


async def test_fresh_server_worker_declares_again_and_delays_work(
    on_private: PrivateRabbit,
) -> None:
    dsn = on_private.dsn
    conn = Connection(await connected(dsn))
    q = unique("fresh")
    ran: list[str] = []
    router = Router()

    @router.actor(queue=q)
    async def job(tag: str) -> None:
        ran.append(tag)

    await conn.message_broker.queue_declare(q)
    worker = Worker(routers=[router], handle_signals=[], _connection=conn)
    work = asyncio.create_task(worker.run())
    try:
        await Job("job", queue=q, args={"tag": "before"}, deferred_by=1,
                  _connection=conn).enqueue()

        async def ran_before() -> bool:
            return ran == ["before"]

        await until(ran_before, 10, "the delayed job before the wipe")
        await asyncio.to_thread(on_private.restart, True)  # every queue and exchange gone

        sent: list[str] = []
        attempts = {"now": 0, "delayed": 0}

        async def enqueued_after() -> bool:
            # each job until it is confirmed, then never again; one not confirmed may still
            # have been stored (at least once), so it may run once per attempt
            for tag, delay in (("now", None), ("delayed", 1)):
                if tag in sent:
                    continue
                attempts[tag] += 1
                try:
                    await Job("job", queue=q, args={"tag": tag}, deferred_by=delay,
                              _connection=conn).enqueue()
                except (ConnectionError, QueueNotDeclaredError):
                    return False
                sent.append(tag)
            return True

        await until(enqueued_after, 20, "enqueues on the fresh server")

        async def ran_after() -> bool:
            return set(ran) == {"before", "delayed", "now"}

        await until(ran_after, 10, "the jobs on the fresh server")
        assert ran.count("before") == 1
        assert all(ran.count(tag) <= attempts[tag] for tag in attempts), (ran, attempts)
        problems = worker.runner.health_problem(0) if worker.runner else None
        assert problems is None
    finally:
        worker.stop()
        await asyncio.wait_for(work, 20)
        await conn.disconnect()


async def test_lost_delay_exchanges_are_declared_again(on_private: PrivateRabbit) -> None:
    b = await connected(on_private.dsn)
    q = unique("lost-topology")
    try:
        await b.queue_declare(q)
        async with b._admin_channel() as ch:  # deleted behind the broker's back
            await ch.exchange_delete(topology.entry_exchange())
        with pytest.raises(EnqueueNotConfirmedError, match="declared again"):
            await b.enqueue(key(q, "first"), "x", params(delay=1))
        await b.enqueue(key(q, "second"), "x", params(delay=1))  # the retry works
        c = b.consume(q)
        k, _, _ = await take(c, 10)
        assert k.id_ == "second"
        await b.ack(k)
        await c.finish()
    finally:
        await b.queue_delete(q)
        await b.disconnect()
