"""Messages as the commands show them, and finding one message by its id in a queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from repid.brokers.base import DEAD_REASON_HEADER, MessageBroker
from repid.brokers.delivery import Delivery
from repid.cli._render import iso, shorten, when
from repid.connection import Connection
from repid.data import MessageCategory, Parameters, ResultBucket, RoutingKey
from repid.message import Message
from repid.queue import Queue

#: how `jobs show` names the part of a queue a message is in
PART_NAMES = {MessageCategory.NORMAL: "ready", MessageCategory.DELAYED: "delayed",
              MessageCategory.DEAD: "dead"}
#: seconds `find_ready` waits for each ready message it takes
TAKE_WAIT = 1.0


@dataclass(frozen=True)
class Found:
    """A message found in a queue, and the part it is in."""

    key: RoutingKey
    payload: str
    params: Parameters
    category: MessageCategory


def dead_reason(params: Parameters) -> str | None:
    """Why a message was dead-lettered, on one line; None when the broker kept no reason."""
    reason = params.headers.get(DEAD_REASON_HEADER)
    return " ".join(reason.split()) if reason else None


def result_id(params: Parameters) -> str | None:
    """The id of the result bucket the message's run stores into, if it stores one."""
    return None if params.result is None else params.result.id_


def message_json(key: RoutingKey, payload: str, params: Parameters,
                 category: MessageCategory) -> dict[str, Any]:
    """Everything about a message, for `--json`."""
    return {
        "id": key.id_, "job": key.topic, "queue": key.queue, "priority": key.priority,
        "part": PART_NAMES[category], "args": payload,
        "retries": {"done": params.retries.already_tried,
                    "allowed": params.retries.max_amount},
        "result_id": result_id(params), "reason": dead_reason(params),
        "sent": iso(params.timestamp), "ready_at": iso(params.ready_at),
        "timeout": params.execution_timeout.total_seconds(),
        "ttl": None if params.ttl is None else params.ttl.total_seconds(),
        "headers": params.headers,
    }


def message_lines(found: Found) -> list[str]:
    """Everything about a message, as `name: value` lines."""
    key, params = found.key, found.params
    lines = [f"job: {key.topic}", f"queue: {key.queue} ({PART_NAMES[found.category]})",
             f"args: {shorten(found.payload, 1000)}",
             f"retries: {params.retries.already_tried} of {params.retries.max_amount}",
             f"sent: {when(params.timestamp)}"]
    if params.ready_at is not None:
        lines.append(f"ready at: {when(params.ready_at)}")
    reason = dead_reason(params)
    if reason is not None:
        lines.append(f"reason: {shorten(reason, 1000)}")
    others = {k: v for k, v in params.headers.items() if k != DEAD_REASON_HEADER}
    if others:
        lines.append("headers: " + ", ".join(f"{shorten(k)}={shorten(v)}"
                                             for k, v in sorted(others.items())))
    return lines


def result_json(bucket: ResultBucket) -> dict[str, Any]:
    """A stored result, for `--json`."""
    return {"success": bucket.success, "data": bucket.data, "exception": bucket.exception,
            "started": iso(bucket.started_when), "finished": iso(bucket.finished_when)}


def result_lines(bucket: ResultBucket) -> list[str]:
    """A stored result, as `name: value` lines."""
    lines = [f"result: {'success' if bucket.success else 'failure'}"]
    if bucket.success:
        lines.append(f"data: {shorten(repr(bucket.data), 1000)}")
    else:
        lines.append(f"exception: {shorten(bucket.exception or '-', 1000)}")
    lines += [f"started: {when(bucket.started_when)}",
              f"finished: {when(bucket.finished_when)}"]
    return lines


async def stored_result(connection: Connection, id_: str) -> ResultBucket | None:
    """The result stored under `id_`, None when there is none (or no results bucket)."""
    broker = connection.results_bucket_broker
    if broker is None:
        return None
    bucket = await broker.get_bucket(id_)
    return bucket if isinstance(bucket, ResultBucket) else None


async def scan(queue: Queue, category: MessageCategory) -> AsyncGenerator[Message, None]:
    """The DELAYED or DEAD messages of `queue` there are now (they stay where they are
    unless the caller settles them). Close it (`aclosing`) when stopping early: the
    broker's reader then finishes at once."""
    messages = queue.get_messages(category=category, stop_when_empty=True)
    try:
        async for message in messages:
            yield message
    finally:
        close = getattr(messages, "aclose", None)  # an async generator
        if close is not None:
            await close()


async def find_in_part(queue: Queue, category: MessageCategory, id_: str) -> Found | None:
    """The DELAYED or DEAD message `id_` of `queue`, None if it is not there."""
    async with aclosing(scan(queue, category)) as messages:
        async for message in messages:
            if message.key.id_ == id_:
                return Found(message.key, message.raw_payload, message.parameters, category)
    return None


async def find_ready(broker: MessageBroker, queue_name: str, id_: str,
                     limit: int) -> Found | None:
    """The ready message `id_` of the queue, None if it is not among the first `limit`.

    Brokers cannot show a ready message without handing it out, so this takes the ready
    messages one by one (waiting `TAKE_WAIT` at most for each) until it meets `id_`, and
    then gives every one back (`reject`: no retry counted; a message may change its
    place in the queue)."""
    ready = (await broker.queue_stats(queue_name))["ready"]
    wanted = limit if ready < 0 else min(ready, limit)
    if wanted <= 0:
        return None
    consumer = broker.consume(queue_name, None, wanted, MessageCategory.NORMAL)
    taken: list[Delivery] = []
    found = None
    await consumer.start()
    try:
        while found is None and len(taken) < wanted:
            try:
                delivery = await asyncio.wait_for(consumer.__anext__(), TAKE_WAIT)
            except (asyncio.TimeoutError, StopAsyncIteration):
                break
            taken.append(delivery)
            if delivery.key.id_ == id_:
                found = Found(delivery.key, delivery.payload, delivery.params,
                              MessageCategory.NORMAL)
    finally:
        for delivery in taken:
            await delivery.reject()
        await consumer.finish()
    return found


async def find_message(connection: Connection, queue: Queue, id_: str,
                       limit: int) -> Found | None:
    """The message `id_` of `queue`: dead, delayed, or among the first `limit` ready."""
    for category in (MessageCategory.DEAD, MessageCategory.DELAYED):
        found = await find_in_part(queue, category, id_)
        if found is not None:
            return found
    return await find_ready(connection.message_broker, queue.name, id_, limit)
