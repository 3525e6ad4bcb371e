"""The pytest plugin as repid 1.x's testing guide has a user write tests with it: the
marker, the mocked actors, the event log and the in-memory queue fixture."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest

import repid

router = repid.Router()


@router.actor
async def greet_user(user_id: int, user_name: str, user_messages: list[str]) -> list[str]:
    user_messages.append(f"Hi {user_name}! Your id is: {user_id}.")
    return user_messages


sync_router = repid.Router()


@sync_router.actor
def shout(word: str) -> str:
    return word.upper()


ARGS = {"user_id": 7, "user_name": "Ann", "user_messages": []}


@pytest.mark.repid.with_args(routers=[router])
async def test_the_event_log_holds_the_seven_broker_calls_in_v1_order(
        repid_get_event_log: repid.GetEventLogT) -> None:
    job = repid.Job("greet_user", args=ARGS)
    await job.queue.declare()
    await job.enqueue()
    log: list[repid.EventLog] = repid_get_event_log()
    assert [e.function for e in log] == [
        "queue_declare", "store_bucket", "enqueue", "consume", "get_bucket", "ack",
        "store_bucket"]
    assert [e.timestamp for e in log] == sorted(e.timestamp for e in log)
    assert (await job.result).data == ["Hi Ann! Your id is: 7."]


@pytest.mark.repid.with_args(routers=[router])
async def test_known_queues_are_not_declared_unless_asked(
        repid_get_in_memory_queue: repid.GetInMemoryQueueT) -> None:
    assert repid_get_in_memory_queue("default") is None


@pytest.mark.repid.with_args(routers=[router], declare_all_known_queues=True)
async def test_known_queues_are_declared_when_asked(
        repid_get_in_memory_queue: repid.GetInMemoryQueueT) -> None:
    assert repid_get_in_memory_queue("default") is not None
    job = repid.Job("greet_user", args=ARGS)
    await job.enqueue()
    assert (await job.result).data == ["Hi Ann! Your id is: 7."]


@pytest.mark.repid.with_args(routers=[router], declare_all_known_queues=True)
async def test_an_async_actors_mock_is_a_magic_mock_that_records_the_call(
        repid_get_mocked_actor: repid.GetMockedActorT) -> None:
    mock = repid_get_mocked_actor("greet_user")
    assert isinstance(mock, MagicMock)
    mock.assert_not_called()
    job = repid.Job("greet_user", args=ARGS)
    await job.enqueue()
    mock.assert_called_once_with(user_id=7, user_name="Ann", user_messages=[
        "Hi Ann! Your id is: 7."])  # the list the actor appended to
    assert (await job.result).data == ["Hi Ann! Your id is: 7."]


@pytest.mark.repid.with_args(routers=[router], declare_all_known_queues=True)
async def test_a_side_effect_set_on_the_mock_is_what_the_actor_does(
        repid_get_mocked_actor: repid.GetMockedActorT) -> None:
    mock = repid_get_mocked_actor("greet_user")
    assert mock is not None
    mock.side_effect = RuntimeError("boom")
    job = repid.Job("greet_user", args=ARGS)
    await job.enqueue()
    result = await job.result
    assert result is not None and not result.success
    assert "boom" in str(result.exception)


@pytest.mark.repid.with_args(routers=[router], declare_all_known_queues=True)
async def test_a_return_value_set_on_an_async_actors_mock_is_the_result(
        repid_get_mocked_actor: repid.GetMockedActorT) -> None:
    mock = repid_get_mocked_actor("greet_user")
    assert mock is not None
    mock.return_value = ["mocked"]
    job = repid.Job("greet_user", args=ARGS)
    await job.enqueue()
    assert (await job.result).data == ["mocked"]


@pytest.mark.repid.with_args(routers=[sync_router], declare_all_known_queues=True)
async def test_a_sync_actors_mock_records_its_call(
        repid_get_mocked_actor: repid.GetMockedActorT) -> None:
    mock = repid_get_mocked_actor("shout")
    assert isinstance(mock, MagicMock)
    job = repid.Job("shout", args={"word": "hey"})
    await job.enqueue()
    mock.assert_called_once_with(word="hey")
    assert (await job.result).data == "HEY"


@pytest.mark.repid
async def test_the_in_memory_queue_fixture_sees_enqueued_jobs(
        repid_get_in_memory_queue: repid.GetInMemoryQueueT) -> None:
    job = repid.Job("greet_user", args=ARGS)
    assert repid_get_in_memory_queue(job.queue) is None
    for _ in range(4):
        await job.enqueue()
    queue = repid_get_in_memory_queue(job.queue)
    assert queue is not None
    assert queue.simple.qsize() == 4
