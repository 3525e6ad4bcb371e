"""The seed document (seed/initial_setup.md): Connection, middleware handed to brokers,
`is_open`, the magic, and the error when nothing is bound."""

from __future__ import annotations

import subprocess
import sys

import pytest

import repid
from repid import (
    Connection,
    InMemoryBucketBroker,
    InMemoryMessageBroker,
    Job,
    NoConnectionError,
    Queue,
    Repid,
    Router,
    Worker,
)


def test_connection_with_one_broker_hands_it_the_middleware() -> None:
    broker = InMemoryMessageBroker()
    conn = Connection(broker)
    assert conn.message_broker is broker
    assert conn.args_bucket_broker is None
    assert conn.results_bucket_broker is None
    assert broker.middleware is conn.middleware
    assert conn.middleware.connection is conn


def test_connection_with_bucket_brokers_hands_every_broker_the_same_middleware() -> None:
    message = InMemoryMessageBroker()
    args = InMemoryBucketBroker()
    results = InMemoryBucketBroker(use_result_bucket=True)
    conn = Connection(message_broker=message, args_bucket_broker=args,
                      results_bucket_broker=results)
    assert conn.args_bucket_broker is args
    assert conn.results_bucket_broker is results
    assert results.use_result_bucket is True and args.use_result_bucket is False
    for broker in (message, args, results):
        assert broker.middleware is conn.middleware


def test_each_connection_gets_its_own_middleware() -> None:
    first = Connection(InMemoryMessageBroker())
    second = Connection(InMemoryMessageBroker())
    assert first.middleware is not second.middleware


def test_broker_without_connection_calls_no_middleware() -> None:
    broker = InMemoryMessageBroker()
    assert broker.middleware is None


async def test_is_open_changes_only_through_connect_and_disconnect() -> None:
    broker = InMemoryMessageBroker()
    conn = Connection(broker, results_bucket_broker=InMemoryBucketBroker())
    assert conn.is_open is False
    await broker.connect()  # the broker's own state is not tracked
    assert conn.is_open is False
    await conn.connect()
    assert conn.is_open is True
    await broker.disconnect()
    assert conn.is_open is True
    await conn.disconnect()
    assert conn.is_open is False


async def test_connect_and_disconnect_reach_every_broker() -> None:
    calls: list[str] = []

    class Spy(InMemoryBucketBroker):
        async def connect(self) -> None:
            calls.append(f"connect {self.use_result_bucket}")

        async def disconnect(self) -> None:
            calls.append(f"disconnect {self.use_result_bucket}")

    conn = Connection(InMemoryMessageBroker(), Spy(), Spy(use_result_bucket=True))
    await conn.connect()
    assert sorted(calls) == ["connect False", "connect True"]
    await conn.disconnect()
    assert sorted(calls[2:]) == ["disconnect False", "disconnect True"]


async def test_magic_binds_connection_so_job_needs_no_connection_argument() -> None:
    broker = InMemoryMessageBroker()
    app = Repid(Connection(broker))
    async with app.magic() as bound:
        assert bound is app.connection
        assert Repid.get_magic_connection() is app.connection
        assert app.connection.is_open
        await Queue().declare()
        j = Job("my_awesome_job")
        await j.enqueue()
    assert broker.queues["default"].simple.qsize() == 1
    # connections are long-lived: the default magic neither disconnects nor unbinds
    assert app.connection.is_open is True
    assert Repid.get_magic_connection() is app.connection


async def test_magic_auto_disconnect_disconnects_and_unbinds() -> None:
    app = Repid(Connection(InMemoryMessageBroker()))
    async with app.magic(auto_disconnect=True):
        assert app.connection.is_open
    assert app.connection.is_open is False
    assert Repid.get_magic_connection() is None


async def test_magic_auto_disconnect_also_on_error() -> None:
    app = Repid(Connection(InMemoryMessageBroker()))
    with pytest.raises(RuntimeError, match="inside"):
        async with app.magic(auto_disconnect=True):
            raise RuntimeError("inside")
    assert app.connection.is_open is False


async def test_magic_connect_and_disconnect_like_fastapi_startup_shutdown() -> None:
    repid_app = Repid(Connection(InMemoryMessageBroker()))
    await repid_app.magic_connect()
    assert repid_app.connection.is_open
    await Queue().declare()
    await Job("my_awesome_fastapi_job").enqueue()
    assert await Queue().stats() == {"ready": 1, "delayed": 0, "in_flight": 0, "dead": 0}
    await repid_app.magic_disconnect()
    assert repid_app.connection.is_open is False
    assert Repid.get_magic_connection() is None


async def test_bound_connection_is_shared_by_every_repid_instance_of_the_thread() -> None:
    first = Repid(Connection(InMemoryMessageBroker()))
    second = Repid(Connection(InMemoryMessageBroker()))
    await first.magic_connect()
    await second.magic_connect()
    assert Repid.get_magic_connection() is second.connection
    # disconnecting the app that is no longer bound leaves the other one bound
    await first.magic_disconnect()
    assert Repid.get_magic_connection() is second.connection


async def test_explicit_connection_wins_over_magic() -> None:
    bound = Connection(InMemoryMessageBroker())
    explicit = Connection(InMemoryMessageBroker())
    await Repid(bound).magic_connect()
    await Queue(_connection=explicit).declare()
    await Job("x", _connection=explicit).enqueue()
    assert "default" not in bound.message_broker.queues  # type: ignore[attr-defined]
    assert explicit.message_broker.queues["default"].simple.qsize() == 1  # type: ignore


async def test_job_without_connection_raises_clear_error() -> None:
    with pytest.raises(NoConnectionError) as info:
        await Job("x").enqueue()
    text = str(info.value)
    assert "Job has no connection" in text
    assert "_connection=" in text and "magic" in text  # says how to fix it
    assert isinstance(info.value, RuntimeError)


async def test_queue_and_worker_without_connection_raise_clear_error() -> None:
    with pytest.raises(NoConnectionError, match=r"Queue has no connection.*_connection="):
        await Queue().declare()
    router = Router()

    @router.actor
    def x() -> None: ...

    with pytest.raises(NoConnectionError, match=r"Worker has no connection.*magic"):
        await Worker(routers=[router]).run()


async def test_job_result_without_connection_raises_clear_error() -> None:
    with pytest.raises(NoConnectionError, match="Job has no connection"):
        await Job("x").result


def test_broker_classes_needing_extras_resolve_lazily() -> None:
    from repid import RabbitMessageBroker, RedisBucketBroker, RedisMessageBroker

    rabbit = RabbitMessageBroker(dsn="amqp://guest:secret@127.0.0.1:5672/")
    redis_bucket = RedisBucketBroker(dsn="redis://:secret@127.0.0.1:6379/0",
                                     use_result_bucket=True)
    assert redis_bucket.use_result_bucket is True
    assert RedisMessageBroker.system == "redis"
    # constructing them does not connect: a Connection can be made offline
    conn = Connection(message_broker=rabbit, args_bucket_broker=RedisBucketBroker(
        dsn="redis://127.0.0.1:6379/1"), results_bucket_broker=redis_bucket)
    assert conn.is_open is False
    assert rabbit.middleware is conn.middleware and redis_bucket.middleware is conn.middleware
    # and their reprs never show the password
    assert "secret" not in repr(rabbit) and "secret" not in repr(redis_bucket)
    assert "secret" not in repr(conn)


def test_unknown_attribute_of_repid_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchBroker"):
        repid.NoSuchBroker  # noqa: B018


def test_public_names_are_importable() -> None:
    for name in repid.__all__:
        assert getattr(repid, name) is not None


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, check=False)


def test_import_repid_does_not_import_broker_libraries() -> None:
    done = _run_python("import sys, repid\n"
                       "print(sorted(m for m in ('aio_pika', 'redis') if m in sys.modules))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_core_install_without_extras_star_import_and_clear_error() -> None:
    done = _run_python(
        "import sys\n"
        "sys.modules['aio_pika'] = None; sys.modules['redis'] = None  # extras missing\n"
        "from repid import *\n"
        "assert Queue and Job and Repid and Connection and InMemoryMessageBroker\n"
        "try:\n"
        "    from repid import RabbitMessageBroker\n"
        "except ImportError as exc:\n"
        "    print(exc)\n")
    assert done.returncode == 0, done.stderr
    assert "pip install 'repid[amqp]'" in done.stdout


async def test_bound_connection_is_per_thread() -> None:
    import threading

    app = Repid(Connection(InMemoryMessageBroker()))
    await app.magic_connect()
    other: list[object] = []
    thread = threading.Thread(target=lambda: other.append(Repid.get_magic_connection()))
    thread.start()
    thread.join(5)
    assert other == [None]
    assert Repid.get_magic_connection() is app.connection
