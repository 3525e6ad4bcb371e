"""The `repid` pytest plugin: marker, fixtures and their types, and the entry-point
registration in a fresh pytest run (pytester)."""

from __future__ import annotations

from datetime import timedelta

import pytest

import repid
from repid import (
    Connection,
    EventLog,
    GetEventLogT,
    GetInMemoryQueueT,
    GetMockedActorT,
    Job,
    MessageDependency,
    NoConnectionError,
    Queue,
    Repid,
    Router,
)
from repid.data import utcnow

pytest_plugins = ["pytester"]

router = Router()


@router.actor
async def add(a: int, b: int) -> int:
    return a + b


@router.actor
def sync_mul(a: int, b: int) -> int:
    return a * b


@router.actor(queue="other", retry_policy=lambda n: 0)
async def flaky(msg: MessageDependency) -> str:
    if msg.parameters.retries.already_tried == 0:
        raise ValueError("first try fails")
    return "ok"


@router.actor
async def parent(n: int) -> None:
    await Job("child", queue="other", args={"n": n + 1}).enqueue()


@router.actor(queue="other")
async def child(n: int) -> int:
    return n


pytestmark = pytest.mark.repid.with_args(routers=[router], declare_all_known_queues=True)


async def test_mocked_actor_is_called_inside_enqueue(
        repid_get_mocked_actor: GetMockedActorT) -> None:
    job = Job("add", args={"a": 1, "b": 2})
    await job.enqueue()
    mocked = repid_get_mocked_actor("add")
    mocked.assert_called_once_with(a=1, b=2)
    assert (await job.result).data == 3  # type: ignore[union-attr]  # the real function ran
    repid_get_mocked_actor("sync_mul").assert_not_called()


async def test_sync_actor_mock(repid_get_mocked_actor: GetMockedActorT) -> None:
    job = Job("sync_mul", args={"a": 6, "b": 7})
    await job.enqueue()
    repid_get_mocked_actor("sync_mul").assert_called_once_with(a=6, b=7)
    assert (await job.result).data == 42  # type: ignore[union-attr]


async def test_mock_side_effect_can_be_replaced(repid_get_mocked_actor: GetMockedActorT) -> None:
    repid_get_mocked_actor("add").side_effect = lambda a, b: -1
    job = Job("add", args={"a": 1, "b": 2})
    await job.enqueue()
    assert (await job.result).data == -1  # type: ignore[union-attr]


def test_unknown_actor_name_lists_known_ones(repid_get_mocked_actor: GetMockedActorT) -> None:
    with pytest.raises(KeyError, match=r"no actor named 'nope'.*'add'"):
        repid_get_mocked_actor("nope")


async def test_event_log_in_call_order(repid_get_event_log: GetEventLogT) -> None:
    job = Job("add", args={"a": 2, "b": 3})
    key, _, _ = await job.enqueue()
    log = repid_get_event_log()
    assert all(isinstance(e, EventLog) for e in log)
    # args go to the args bucket first, then the message runs within the enqueue; broker
    # calls only, the result after the ack, as in repid 1.x
    assert [e.function for e in log] == ["store_bucket", "enqueue", "consume", "get_bucket",
                                        "ack", "store_bucket"]
    enqueue = log[1]
    assert enqueue.kwargs["key"] == key and enqueue.args[0] == key
    assert set(enqueue.kwargs) == {"key", "payload", "params"}
    assert log[3].kwargs["id_"] == job.args_id
    assert log[4].args == (log[4].kwargs["key"],) and log[4].kwargs["key"].id_ == key.id_
    assert log[5].kwargs["id_"] == job.result_id
    assert log[5].kwargs["payload"].success is True and log[5].kwargs["payload"].data == 5
    stamps = [e.perf_counter for e in log]
    assert stamps == sorted(stamps)
    assert all(e.timestamp > 0 for e in log)


async def test_event_log_of_a_retry(repid_get_event_log: GetEventLogT) -> None:
    job = Job("flaky", queue="other", retries=1)
    await job.enqueue()
    names = [e.function for e in repid_get_event_log() if e.function not in (
        "consume", "get_bucket")]
    assert names == ["enqueue", "requeue", "store_bucket", "ack", "store_bucket"]
    assert (await job.result).data == "ok"  # type: ignore[union-attr]


async def test_nested_enqueue_to_another_queue_runs_too(
        repid_get_mocked_actor: GetMockedActorT) -> None:
    await Job("parent", args={"n": 1}).enqueue()
    repid_get_mocked_actor("parent").assert_called_once_with(n=1)
    repid_get_mocked_actor("child").assert_called_once_with(n=2)


async def test_in_memory_queue_counts_waiting_messages(
        repid_get_in_memory_queue: GetInMemoryQueueT,
        repid_get_mocked_actor: GetMockedActorT) -> None:
    queue = repid_get_in_memory_queue("default")
    assert queue is not None and queue.simple.qsize() == 0
    # a job for later waits in the queue and does not run
    await Job("add", args={"a": 1, "b": 1},
              deferred_until=utcnow() + timedelta(hours=1)).enqueue()
    assert queue.simple.qsize() == 0 and len(queue.delayed) == 1
    repid_get_mocked_actor("add").assert_not_called()
    assert repid_get_in_memory_queue("nope") is None


async def test_repid_app_and_connection_are_bound(repid_app: Repid,
                                                  repid_connection: Connection) -> None:
    assert repid_app.connection is repid_connection
    assert Repid.get_magic_connection() is repid_connection
    assert repid_connection.is_open
    assert repid_connection.args_bucket_broker is not None
    assert repid_connection.results_bucket_broker is not None


@pytest.mark.repid.with_args(routers=[router], declare_all_known_queues=False)
async def test_queue_is_none_until_declared(repid_get_in_memory_queue: GetInMemoryQueueT,
                                            repid_get_mocked_actor: GetMockedActorT) -> None:
    assert repid_get_in_memory_queue("default") is None
    await Queue().declare()
    queue = repid_get_in_memory_queue("default")
    assert queue is not None and queue.simple.qsize() == 0
    await Job("add", args={"a": 1, "b": 1}).enqueue()
    repid_get_mocked_actor("add").assert_called_once_with(a=1, b=1)


@pytest.mark.repid.with_args(routers=[router], autoconnection=False)
async def test_autoconnection_false_binds_nothing(repid_connection: Connection) -> None:
    assert Repid.get_magic_connection() is None
    with pytest.raises(NoConnectionError):
        await Job("add").enqueue()
    await Job("add", args={"a": 1, "b": 1}, _connection=repid_connection).enqueue()


@pytest.mark.repid.with_args()
async def test_a_function_marker_keeps_the_modules_routers(
        repid_get_mocked_actor: GetMockedActorT) -> None:
    # as in repid 1.x, routers gather from every level's marker
    await Job("add", args={"a": 1, "b": 1}).enqueue()
    repid_get_mocked_actor("add").assert_called_once_with(a=1, b=1)


async def test_in_memory_queue_by_queue_object(
        repid_get_in_memory_queue: GetInMemoryQueueT) -> None:
    queue = Queue("other")
    assert repid_get_in_memory_queue(queue) is repid_get_in_memory_queue("other") is not None
    assert repid_get_in_memory_queue(Queue("undeclared")) is None


def test_types_are_exported_by_repid() -> None:
    for name in ("GetMockedActorT", "GetEventLogT", "GetInMemoryQueueT", "EventLog"):
        assert name in repid.__all__
    assert EventLog.__dataclass_fields__.keys() >= {"function", "args", "kwargs", "result",
                                                    "timestamp", "perf_counter"}


INNER = '''
import pytest

from repid import GetEventLogT, GetMockedActorT, Job, Repid, Router

router = Router()


@router.actor
async def greet(name: str) -> str:
    return f"hi {name}"


pytestmark = pytest.mark.repid.with_args(routers=[router])


async def test_runs(repid_get_mocked_actor: GetMockedActorT,
                    repid_get_event_log: GetEventLogT) -> None:
    job = Job("greet", args={"name": "ada"})
    await job.enqueue()
    repid_get_mocked_actor("greet").assert_called_once_with(name="ada")
    assert (await job.result).data == "hi ada"
    assert "ack" in [e.function for e in repid_get_event_log()]


def test_bound(repid_app) -> None:
    assert Repid.get_magic_connection() is repid_app.connection


@pytest.mark.repid.with_args(autoconnection=False)
def test_not_bound(repid_app) -> None:
    assert Repid.get_magic_connection() is None


def test_marker_is_registered(pytestconfig) -> None:
    assert any(line.startswith("repid:") for line in pytestconfig.getini("markers"))
'''


def test_plugin_is_registered_by_entry_point_in_a_fresh_run(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_mode = auto\n"
                     "asyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=4)
    # and without the plugin the marker's fixtures are gone
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:repid")
    result.assert_outcomes(errors=3, failed=1)
