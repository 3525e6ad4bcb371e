"""`repid migrate-v1` on data written by the real repid 1.6.0 (in a throwaway virtualenv):
a worker meeting 1.x data says so; the dry run changes nothing; `--apply` moves
everything, also after a stopped run, and a second run is a no-op; then a worker of this
version runs the ready and due messages, the dead ones are dead and the buckets read."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import suppress
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from click.testing import CliRunner

from repid import Connection, Job, Queue, RedisBucketBroker, Repid, Router, Worker
from repid.brokers import _v1_format as v1_format
from repid.cli import main
from repid.data import ArgsBucket, MessageCategory, ResultBucket
from repid.errors import QueueDeclareError
from repid.serializer import ARGS_BUCKET_MARKER
from tests.cli.cli_helpers import cli_env, repid_command
from tests.v1.v1_env import make_v1_venv, produce_v1

ROOT = Path(__file__).resolve().parents[2]
#: the Redis database these tests write to, apart from everyone else's
V1_DB = 7


# --- the encoding, without servers --------------------------------------------------------


def test_the_args_bucket_reference_becomes_the_current_one() -> None:
    assert v1_format.ARGS_MARKER == ARGS_BUCKET_MARKER
    assert v1_format.convert_payload('{"__repid_payload_id":"a1"}') == \
        '{"' + ARGS_BUCKET_MARKER + '":"a1"}'
    assert v1_format.convert_payload('{"value":1}') == '{"value":1}'


def test_priorities_and_buckets_convert() -> None:
    assert [v1_format.priority_from_v1(p) for p in (0, 5, 9, 2, 3, 7, 8)] == \
        [0, 1, 2, 0, 1, 1, 2]
    result = v1_format.convert_bucket(
        '{"data":"{\\"x\\":1}","started_when":1000000000,"finished_when":2000000000,'
        '"success":true,"exception":null,"timestamp":"2026-01-01T00:00:00+00:00",'
        '"ttl":60.0}')
    assert isinstance(result, ResultBucket)
    assert result.data == {"x": 1}
    assert result.started_when.timestamp() == 1.0
    assert result.ttl == timedelta(seconds=60)
    args = v1_format.convert_bucket('{"data":"[1]","timestamp":"2026-01-01T00:00:00",'
                                    '"ttl":null}')
    assert isinstance(args, ArgsBucket) and args.data == "[1]"
    assert v1_format.v1_bucket_kind('{"data":"x"}') is None  # not 1.x's exact fields


# --- the CLI's own checks -----------------------------------------------------------------


def test_cli_refuses_what_it_cannot_migrate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPID_BROKER_DSN", raising=False)
    runner = CliRunner()
    no_dsn = runner.invoke(main, ["migrate-v1"])
    assert no_dsn.exit_code == 2 and "REPID_BROKER_DSN" in no_dsn.output
    memory = runner.invoke(main, ["migrate-v1", "--dsn", "memory://"])
    assert memory.exit_code == 2 and "not a Redis" in memory.output
    rabbit = runner.invoke(main, ["migrate-v1", "--dsn", "amqp://guest:guest@127.0.0.1:1/"])
    assert rabbit.exit_code == 2 and "--queue NAME" in rabbit.output


# --- with the real repid 1.6.0 ------------------------------------------------------------


@pytest.fixture(scope="session")
def v1_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a virtualenv with repid 1.6.0 (made once per session)."""
    return make_v1_venv(tmp_path_factory.mktemp("repid-v1"))


@pytest.fixture
def v1_redis(redis_dsn: str) -> str:
    """The test Redis, database V1_DB."""
    parts = urlsplit(redis_dsn)
    return urlunsplit(parts._replace(path=f"/{V1_DB}"))


def run_cli(*args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(main, ["migrate-v1", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def run_cli_process(*args: str) -> str:
    done = subprocess.run([*repid_command(), "migrate-v1", *args], cwd=ROOT, env=cli_env(),
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def counts(out: str, queue: str) -> list[int]:
    """The ready, delayed and dead counts the CLI printed for `queue`."""
    found = re.search(rf"queue {queue}: ready (\d+), delayed (\d+), dead (\d+)", out)
    assert found is not None, out
    return [int(n) for n in found.groups()]


def new_router(queue: str, seen: list[Any]) -> Router:
    router = Router()

    @router.actor(queue=queue)
    async def v1_ok(value: int) -> dict[str, int]:
        seen.append(value)
        return {"doubled": value * 2}

    @router.actor(queue=queue)
    async def v1_fail(value: int) -> None:
        seen.append(("fail", value))

    return router


async def run_worker(app: Repid, queue: str, count: int, timeout: float) -> list[Any]:
    """Run a worker of this version until it processed `count` messages."""
    seen: list[Any] = []
    worker = Worker(routers=[new_router(queue, seen)], messages_limit=count,
                    graceful_shutdown_time=1, _connection=app.connection)
    await asyncio.wait_for(worker.run(), timeout)
    return seen


async def dead_ids(queue: str, app: Repid) -> list[tuple[str, str]]:
    found = []
    async for message in Queue(queue, _connection=app.connection).get_messages(
            category=MessageCategory.DEAD, stop_when_empty=True):
        found.append((message.key.id_,
                      message.parameters.headers.get("x-repid-dead-reason", "")))
    return found


def check_buckets(app: Repid, wrote: dict[str, Any], queue: str) -> None:
    async def go() -> None:
        async with app.magic(auto_disconnect=True):
            await read()

    async def read() -> None:
        (result_id, value), = wrote["results"].items()
        job = Job("v1_ok", queue=queue, result_id=result_id, _connection=app.connection)
        bucket = await job.result
        assert bucket is not None and bucket.success and bucket.data == value
        assert app.connection.args_bucket_broker is not None
        args = await app.connection.args_bucket_broker.get_bucket(wrote["args_buckets"][0])
        assert isinstance(args, ArgsBucket) and args.data == '{"value":100}'

    asyncio.run(go())


# --- Redis ---------------------------------------------------------------------------------


def redis_snapshot(dsn: str, queue: str, wrote: dict[str, Any]) -> dict[str, Any]:
    """Every key of the queue (1.x's and the current ones) and the buckets, with values."""
    import redis

    client = redis.Redis.from_url(dsn, decode_responses=True)
    try:
        keys = sorted({*client.scan_iter(f"q:{queue}:*"), *client.scan_iter(f"m:{queue}:*"),
                       *client.scan_iter(f"repid:{{{queue}}}:*")})
        bucket_ids = [*wrote["results"], *wrote["args_buckets"]]
        keys += [*bucket_ids, *(f"repid:bucket:{b}" for b in bucket_ids)]
        return {key: client.dump(key) for key in keys}
    finally:
        client.close()


@pytest.fixture
def redis_v1_data(v1_python: Path, v1_redis: str) -> Iterator[tuple[str, dict[str, Any]]]:
    queue = f"v1mig-{uuid.uuid4().hex[:10]}"
    wrote = produce_v1(v1_python, "redis", v1_redis, v1_redis, queue)
    yield queue, wrote
    import redis

    client = redis.Redis.from_url(v1_redis, decode_responses=True)
    try:
        keys = [*client.scan_iter(f"q:{queue}:*"), *client.scan_iter(f"m:{queue}:*"),
                *client.scan_iter(f"repid:{{{queue}}}:*")]
        for bucket_id in [*wrote["results"], *wrote["args_buckets"],
                          *(f"res-{i}-{queue}" for i in range(4))]:
            keys += [bucket_id, f"repid:bucket:{bucket_id}"]
        client.delete(*keys)
        client.srem("repid:queues", queue)
    finally:
        client.close()


def redis_app(dsn: str) -> Repid:
    from repid import RedisMessageBroker

    buckets = RedisBucketBroker(dsn)
    return Repid(Connection(RedisMessageBroker(dsn), args_bucket_broker=buckets,
                            results_bucket_broker=RedisBucketBroker(
                                dsn, use_result_bucket=True)))


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_redis_v1_data_is_migrated(redis_v1_data: tuple[str, dict[str, Any]], v1_redis: str,
                                   caplog: pytest.LogCaptureFixture) -> None:
    queue, wrote = redis_v1_data
    app = redis_app(v1_redis)

    # a worker of this version meets the 1.x keys and names the command
    async def declare() -> None:
        async with app.magic(auto_disconnect=True):
            await Queue(queue).declare()

    with caplog.at_level(logging.WARNING, logger="repid.brokers.redis"):
        asyncio.run(declare())
    assert any(queue in r.getMessage() and "repid migrate-v1 --apply" in r.getMessage()
               for r in caplog.records)

    # the dry run reports the counts and changes nothing
    before = redis_snapshot(v1_redis, queue, wrote)
    out = run_cli("--dsn", v1_redis, "--queue", queue)
    assert f"queue {queue}: ready 5, delayed 3, dead 1" in out
    args_found, results_found = map(int, re.findall(r"args (\d+), result (\d+)", out)[0])
    assert args_found >= 1 and results_found >= 1  # the database may hold others' too
    assert redis_snapshot(v1_redis, queue, wrote) == before

    # a run stopped after 4 messages (as a subprocess), then one that finishes
    out = run_cli_process("--dsn", v1_redis, "--queue", queue, "--apply", "--limit", "4")
    assert f"queue {queue}: ready 4, delayed 0, dead 0" in out
    out = run_cli("--queue", queue, "--apply", "--bucket-dsn", v1_redis,
                  env={"REPID_BROKER_DSN": v1_redis})
    assert f"queue {queue}: ready 1, delayed 3, dead 1" in out
    # a second run moves nothing and changes nothing
    after = redis_snapshot(v1_redis, queue, wrote)
    assert not any(key.startswith(("q:", "m:")) for key in after if after[key] is not None)
    out = run_cli("--dsn", v1_redis, "--queue", queue, "--apply")
    assert f"queue {queue}: ready 0, delayed 0, dead 0" in out
    assert redis_snapshot(v1_redis, queue, wrote) == after

    # a worker of this version runs every ready message once, then the one due soon
    async def work() -> tuple[list[Any], dict[str, int], list[tuple[str, str]]]:
        async with app.magic(auto_disconnect=True):
            seen = await run_worker(app, queue, 6, timeout=30)
            stats = await Queue(queue).stats()
            return seen, stats, await dead_ids(queue, app)

    seen, stats, dead = asyncio.run(work())
    assert sorted(seen) == [0, 1, 2, 3, 5, 100]
    assert seen[-1] == 5  # the delayed one ran after the ready ones
    assert stats["delayed"] == 2  # the far one and the recurring one still wait
    assert dead == [("dead-1", v1_format.V1_DEAD_REASON)]
    check_buckets(app, wrote, queue)


# --- RabbitMQ ------------------------------------------------------------------------------


@pytest.fixture
def rabbit_v1_data(v1_python: Path, amqp_dsn: str,
                   v1_redis: str) -> Iterator[tuple[str, dict[str, Any]]]:
    queue = f"v1mig-{uuid.uuid4().hex[:10]}"
    wrote = produce_v1(v1_python, "amqp", amqp_dsn, v1_redis, queue)
    yield queue, wrote
    import redis

    async def drop() -> None:
        import aiormq

        from repid import RabbitMessageBroker

        broker = RabbitMessageBroker(amqp_dsn)
        await broker.connect()
        with suppress(Exception):  # also drops its messages waiting in the delay levels
            await broker.queue_delete(queue)
        await broker.disconnect()
        connection = await aiormq.connect(amqp_dsn)
        channel = await connection.channel()
        for name in (queue, f"{queue}:dead", f"{queue}:delayed", f"{queue}:v1-migration"):
            await channel.queue_delete(name)
        await connection.close()

    asyncio.run(drop())
    client = redis.Redis.from_url(v1_redis)
    try:
        for bucket_id in [*wrote["results"], *wrote["args_buckets"],
                          *(f"res-{i}-{queue}" for i in range(4))]:
            client.delete(bucket_id, f"repid:bucket:{bucket_id}")
    finally:
        client.close()


def rabbit_app(amqp_dsn: str, bucket_dsn: str) -> Repid:
    from repid import RabbitMessageBroker

    return Repid(Connection(RabbitMessageBroker(amqp_dsn),
                            args_bucket_broker=RedisBucketBroker(bucket_dsn),
                            results_bucket_broker=RedisBucketBroker(
                                bucket_dsn, use_result_bucket=True)))


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_rabbitmq_v1_queues_are_migrated(rabbit_v1_data: tuple[str, dict[str, Any]],
                                         amqp_dsn: str, v1_redis: str) -> None:
    queue, wrote = rabbit_v1_data
    app = rabbit_app(amqp_dsn, v1_redis)
    args = ["--dsn", amqp_dsn, "--queue", queue, "--bucket-dsn", v1_redis]

    # a worker of this version is refused the 1.x queue and says why
    async def declare() -> str:
        async with app.magic(auto_disconnect=True):
            with pytest.raises(QueueDeclareError) as error:
                await Queue(queue).declare()
            return str(error.value)

    text = asyncio.run(declare())
    assert repr(queue) in text and "repid 1.x" in text and "repid migrate-v1 --apply" in text

    # the dry run reports the counts, twice the same (it changes nothing)
    out = run_cli(*args)
    assert f"queue {queue}: ready 5, delayed 3, dead 1" in out
    assert run_cli(*args) == out

    # stopped while draining, then while delivering, then finished: each message reaches
    # its new queue once
    moved = [0, 0, 0]
    out = run_cli(*args, "--apply", "--limit", "3")
    assert "stopped at the --limit" in out and "moved 0 messages" in out
    out = run_cli_process(*args, "--apply", "--limit", "10")
    assert "stopped at the --limit" in out and "moved 4 messages" in out
    moved = [a + b for a, b in zip(moved, counts(out, queue), strict=True)]
    out = run_cli(*args, "--apply")
    assert "moved 5 messages" in out and "args 1, result 1" in out
    moved = [a + b for a, b in zip(moved, counts(out, queue), strict=True)]
    assert moved == [5, 3, 1]
    # a second run moves nothing
    out = run_cli(*args, "--apply")
    assert f"queue {queue}: ready 0, delayed 0, dead 0" in out
    assert "moved 0 messages and 0 buckets" in out

    async def work() -> tuple[list[Any], list[tuple[str, str]]]:
        async with app.magic(auto_disconnect=True):
            await Queue(queue).declare()  # now in the current form
            seen = await run_worker(app, queue, 6, timeout=30)
            return seen, await dead_ids(queue, app)

    seen, dead = asyncio.run(work())
    assert sorted(seen) == [0, 1, 2, 3, 5, 100]
    assert seen[-1] == 5
    assert dead == [("dead-1", v1_format.V1_DEAD_REASON)]
    check_buckets(app, wrote, queue)
