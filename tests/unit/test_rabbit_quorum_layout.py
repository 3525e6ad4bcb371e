"""The pieces of RabbitMQ quorum queues that need no server: the consumer's fair priority
buffer, the priority-level queue names, and reading RabbitMQ's refusal of a queue declared
with the other type."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from repid.brokers.rabbitmq import _layout as layout
from repid.brokers.rabbitmq import _topology as topology
from repid.brokers.rabbitmq._levels import STARVATION_LIMIT, FairPriorityBuffer


def item(priority: int, name: str) -> SimpleNamespace:
    return SimpleNamespace(key=SimpleNamespace(priority=priority), name=name)


async def drain(buffer: FairPriorityBuffer) -> list[str | None]:
    out: list[str | None] = []
    while not buffer.empty():
        got = await asyncio.wait_for(buffer.get(), 1)
        out.append(getattr(got, "name", None))
    return out


async def test_highest_level_first_and_end_marks_before_messages() -> None:
    buffer = FairPriorityBuffer()
    for priority, name in [(0, "l1"), (1, "m1"), (2, "h1"), (7, "h2"), (-3, "l2")]:
        buffer.put_nowait(item(priority, name))
    buffer.put_nowait(None)
    assert await drain(buffer) == [None, "h1", "h2", "m1", "l1", "l2"]


async def test_lower_levels_are_not_starved() -> None:
    buffer = FairPriorityBuffer()
    for n in range(3 * STARVATION_LIMIT):
        buffer.put_nowait(item(2, f"h{n}"))
    for n in range(2):
        buffer.put_nowait(item(1, f"m{n}"))
        buffer.put_nowait(item(0, f"l{n}"))
    order = await drain(buffer)
    # 10 HIGH, then MEDIUM and LOW (each passed by 10, resp. 11), and again
    assert order[STARVATION_LIMIT:STARVATION_LIMIT + 2] == ["m0", "l0"]
    assert order[2 * STARVATION_LIMIT + 2:2 * STARVATION_LIMIT + 4] == ["m1", "l1"]
    assert order[:STARVATION_LIMIT] == [f"h{n}" for n in range(STARVATION_LIMIT)]


async def test_a_waiting_take_is_cancel_safe() -> None:
    buffer = FairPriorityBuffer()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(buffer.get(), 0.01)
    buffer.put_nowait(item(1, "m"))
    assert (await asyncio.wait_for(buffer.get(), 1)).name == "m"


def test_priority_level_queues() -> None:
    assert topology.priority_queues("emails") == ["emails:high", "emails", "emails:low"]
    assert [topology.queue_of(name) for name in topology.priority_queues("emails")] == [
        "emails"] * 3
    quorum = layout.QuorumLayout(5)
    assert quorum.home("emails", 9) == "emails:high"
    assert quorum.home("emails", -1) == "emails:low"
    assert layout.ClassicLayout().home("emails", 2) == "emails"
    assert topology.level_queue(3, quorum=True) == "repid.qdelay.q3"
    assert topology.next_exchange(0, quorum=True) == topology.DELIVER_EXCHANGE


@pytest.mark.parametrize(("error", "kind"), [
    ("PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for queue 'q' in vhost '/': "
     "received none but current is the value '2' of type 'byte'", "classic"),
    ("PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-strategy' for queue 'q' in "
     "vhost '/': received none but current is the value 'at-least-once' of type 'longstr'",
     "quorum"),
    ("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': "
     "received the value 'quorum' of type 'longstr' but current is none", "classic"),
    ("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': "
     "received 'classic' but current is 'quorum'", "quorum"),
    ("PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue 'q' in "
     "vhost '/': received none but current is the value 'x' of type 'longstr'", None),
    ("NOT_FOUND - no queue 'q' in vhost '/'", None),
])
def test_the_existing_type_is_read_from_rabbitmqs_refusal(error: str, kind: str | None) -> None:
    assert layout.existing_type(error) == kind


def test_queue_type_values() -> None:
    assert layout.check_queue_type("quorum") == "quorum"
    with pytest.raises(ValueError, match="give one of 'classic', 'quorum'"):
        layout.check_queue_type("stream")
