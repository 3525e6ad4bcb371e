"""`repid queues declare|flush|delete|stats` and `repid dead list|requeue` on real brokers."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from cli_helpers import enqueue
from click.testing import CliRunner, Result

from repid import Connection, Job, Queue, Router, Worker
from repid.cli import main

pytestmark = pytest.mark.integration


def ok(dsn: str, *args: str) -> Result:
    result = CliRunner().invoke(main, list(args), env={"REPID_BROKER_DSN": dsn})
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    return result


def dead_lines(result: Result) -> list[str]:
    """The first line of each message of `dead list`, and its total line (each message's
    indented second line, its details, is tested in test_cli_commands.py)."""
    return [line for line in result.output.splitlines() if not line.startswith("    ")]


def stats(dsn: str, queue: str) -> dict[str, int]:
    found = json.loads(ok(dsn, "queues", "stats", queue, "--json").output)[queue]
    assert isinstance(found, dict)
    return found


async def _dead_letter(dsn: str, queue: str, reasons: list[str | None]) -> None:
    """Take ready messages and dead-letter one per reason (None: no reason given)."""
    from repid.cli._loading import message_broker_from_dsn

    broker = message_broker_from_dsn(dsn)
    connection = Connection(broker)
    await connection.connect()
    try:
        async for message in Queue(queue, _connection=connection).get_messages():
            await broker.nack(message.key, reasons.pop(0))
            if not reasons:
                break
    finally:
        await connection.disconnect()


async def _fail_twice(dsn: str, queue: str) -> None:
    """A job allowed one retry whose actor always fails: dead after two runs."""
    from repid.brokers.redis import RedisMessageBroker

    router = Router()

    @router.actor(name="always_fails", queue=queue, retry_policy=lambda n: 0)
    async def always_fails() -> None:
        raise ValueError("no data")

    connection = Connection(RedisMessageBroker(dsn=dsn))
    await connection.connect()
    try:
        await Job("always_fails", queue=queue, retries=1, _connection=connection).enqueue()
        worker = Worker(routers=[router], messages_limit=2, handle_signals=[],
                        _connection=connection)
        await asyncio.wait_for(worker.run(), timeout=10)
    finally:
        await connection.disconnect()


def test_queue_commands_on_redis(redis_dsn: str) -> None:
    queue = f"cli_{uuid.uuid4().hex[:10]}"
    try:
        assert ok(redis_dsn, "queues", "declare", queue).output == f"declared {queue}\n"
        enqueue(redis_dsn, queue, [{"n": n} for n in range(3)])
        assert stats(redis_dsn, queue) == {"ready": 3, "delayed": 0, "in_flight": 0, "dead": 0}
        table = ok(redis_dsn, "queues", "stats", queue).output.splitlines()
        assert table[0].split() == ["queue", "ready", "delayed", "in_flight", "dead"]
        assert table[1].split() == [queue, "3", "0", "0", "0"]

        asyncio.run(_dead_letter(redis_dsn, queue,
                                 ["no retries left; last error:\n  ValueError: bad", None]))
        assert stats(redis_dsn, queue)["dead"] == 2
        listed = dead_lines(ok(redis_dsn, "dead", "list", queue))
        assert listed[2] == f"2 dead messages in {queue}"
        fields = sorted(line.split("  ", 2)[1:] for line in listed[:2])
        assert fields == [["work", "retries: 0 of 0"],
                          ["work", "retries: 0 of 0  reason: no retries left; last error: "
                                   "ValueError: bad"]]
        assert stats(redis_dsn, queue)["dead"] == 2  # listing leaves them dead

        assert ok(redis_dsn, "dead", "requeue", queue).output == \
            f"requeued 2 dead messages to {queue}\n"
        assert stats(redis_dsn, queue) == {"ready": 3, "delayed": 0, "in_flight": 0, "dead": 0}

        ok(redis_dsn, "queues", "flush", queue)
        assert stats(redis_dsn, queue)["ready"] == 0
    finally:
        ok(redis_dsn, "queues", "delete", queue)


def test_dead_list_counts_retries_and_shows_the_reason(redis_dsn: str) -> None:
    queue = f"cli_{uuid.uuid4().hex[:10]}"
    try:
        ok(redis_dsn, "queues", "declare", queue)
        asyncio.run(_fail_twice(redis_dsn, queue))
        listed = dead_lines(ok(redis_dsn, "dead", "list", queue))
        assert len(listed) == 2 and listed[1] == f"1 dead message in {queue}"
        message_id, topic, rest = listed[0].split("  ", 2)
        assert len(message_id) == 32 and topic == "always_fails"
        # one retry done of one allowed (two runs); the worker's reason names the error
        assert rest.startswith("retries: 1 of 1  reason: ") and "ValueError: no data" in rest
    finally:
        ok(redis_dsn, "queues", "delete", queue)


def test_dead_list_on_rabbitmq_shows_the_reason(amqp_dsn: str) -> None:
    queue = f"cli_{uuid.uuid4().hex[:10]}"
    try:
        ok(amqp_dsn, "queues", "declare", queue)
        enqueue(amqp_dsn, queue, [{"n": 1}])
        asyncio.run(_dead_letter(amqp_dsn, queue, ["expired before it ran (ttl 0:00:05)"]))
        listed = dead_lines(ok(amqp_dsn, "dead", "list", queue))
        assert listed[0].split("  ", 2)[1:] == [
            "work", "retries: 0 of 0  reason: expired before it ran (ttl 0:00:05)"]
        assert listed[1] == f"1 dead message in {queue}"
        assert ok(amqp_dsn, "dead", "requeue", queue).output == \
            f"requeued 1 dead message to {queue}\n"
        assert stats(amqp_dsn, queue)["dead"] == 0
    finally:
        ok(amqp_dsn, "queues", "delete", queue)


def test_queue_commands_on_rabbitmq(amqp_dsn: str) -> None:
    queue = f"cli_{uuid.uuid4().hex[:10]}"
    missing = f"cli_{uuid.uuid4().hex[:10]}"
    try:
        ok(amqp_dsn, "queues", "declare", queue)
        table = ok(amqp_dsn, "queues", "stats", queue, missing).output.splitlines()
        assert table[1].split() == [queue, "0", "-", "-", "0"]
        assert table[2].split() == [missing, "not", "declared"]
        assert ok(amqp_dsn, "dead", "requeue", queue).output == \
            f"requeued 0 dead messages to {queue}\n"
        missing_one = CliRunner().invoke(main, ["dead", "requeue", missing],
                                         env={"REPID_BROKER_DSN": amqp_dsn})
        assert missing_one.exit_code == 2
        assert missing_one.stderr == (f"Error: queue {missing!r} is not declared: check its "
                                      "name (`repid queues list` shows the declared ones), "
                                      f"or declare it with `repid queues declare {missing}`\n")
    finally:
        ok(amqp_dsn, "queues", "delete", queue)


def test_invalid_queue_name_is_refused_before_connecting() -> None:
    result = CliRunner().invoke(main, ["queues", "declare", "bad name!"],
                                env={"REPID_BROKER_DSN": "memory://"})
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1


def test_stats_of_an_undeclared_in_memory_queue() -> None:
    result = CliRunner().invoke(main, ["queues", "stats", "nowhere", "--json"],
                                env={"REPID_BROKER_DSN": "memory://"})
    assert result.exit_code == 0
    assert json.loads(result.output) == {"nowhere": None}


@pytest.mark.parametrize("app", ["tests.cli.cli_app:app", "tests/cli/cli_app.py:connection"])
def test_connection_from_app_option(app: str) -> None:
    result = CliRunner().invoke(main, ["queues", "declare", "from_app", "--app", app])
    assert result.exit_code == 0, (result.output, result.stderr)
    assert result.output == "declared from_app\n"


def test_rabbitmq_in_flight_through_the_management_api(amqp_dsn: str) -> None:
    """With REPID_RABBITMQ_MANAGEMENT_URL the in-flight column is a count, not `-`."""
    import os
    import socket

    try:
        socket.create_connection(("127.0.0.1", 15672), timeout=1).close()
    except OSError:
        reason = "RabbitMQ's management API is not reachable at 127.0.0.1:15672"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true requires it (.ci/run enables the plugin)")
        pytest.skip(f"{reason}; run `rabbitmq-plugins enable rabbitmq_management`")
    queue = f"cli_{uuid.uuid4().hex[:10]}"
    env = {"REPID_BROKER_DSN": amqp_dsn,
           "REPID_RABBITMQ_MANAGEMENT_URL": "http://guest:guest@127.0.0.1:15672"}
    try:
        ok(amqp_dsn, "queues", "declare", queue)
        # the management API learns of a new queue within its statistics interval (5 s)
        import time

        deadline, seen = time.monotonic() + 15, None
        while time.monotonic() < deadline and seen != 0:
            result = CliRunner().invoke(main, ["queues", "stats", queue, "--json"], env=env)
            assert result.exit_code == 0, result.output
            seen = json.loads(result.output)[queue]["in_flight"]
            time.sleep(0.5)
        assert seen == 0
    finally:
        ok(amqp_dsn, "queues", "delete", queue)
