"""Move what repid 1.x left in RabbitMQ into the current topology (`repid migrate-v1`).

repid 1.x declared, per queue Q: `Q` (x-max-priority 9, dead-lettering to `Q:dead` through
the default exchange), `Q:dead` (x-max-priority 9) and `Q:delayed` (x-max-priority 9, each
message with its own expiration, then dead-lettered to `Q`). Each message's body was JSON
`{"payload": ..., "parameters": ...}`, its id the `message_id` and its topic a header.
This version declares `Q` and `Q:dead` with other arguments, so RabbitMQ refuses to
declare them over 1.x's (PRECONDITION_FAILED): the 1.x queues must be emptied, deleted and
declared again. The messages wait meanwhile in a holding queue, `Q:v1-migration`:

1. drain: each message of `Q:delayed`, `Q` and `Q:dead` (in this order, so none expires
   from `Q:delayed` into an emptied `Q`) is converted (`v1_format`), published to the
   holding queue with a header naming its category, and acked from the 1.x queue only once
   RabbitMQ has confirmed the copy;
2. replace: once all three are empty and nobody consumes them, they are deleted (with
   `if-empty`, so a message arriving meanwhile makes the delete fail rather than vanish)
   and `Q` is declared as this version declares it;
3. deliver: each held message is published, confirmed, to where it belongs now (ready:
   `Q`; delayed: the delay levels, or `Q` when due; dead: `Q:dead` with a dead reason),
   then acked from the holding queue, which is deleted once empty.

Guarantees: a message is acked from where it was only after its copy is confirmed, so no
stop at any point loses one. Every step starts from what the server holds, so running
again finishes an interrupted run, and a run with nothing left changes nothing. A stop
between a confirm and its ack (a killed process, a dropped connection) leaves that one
message in both places: a copy in the holding queue is dropped when the holding queue is
delivered (same id, same category, in the same run), so only a kill in the delivery step
itself can run one message twice. Messages 1.x workers hold stop the run before anything
is deleted (stop them first); a 1.x producer still publishing to `Q` after the run gets an
error on its next declare (upgrade it first).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from aiormq.exceptions import AMQPError, ChannelClosed, ChannelNotFoundEntity
from pamqp.commands import Basic

from repid.brokers._dsn import mask_dsn
from repid.brokers._v1_format import (
    V1_DEAD_REASON,
    V1Message,
    convert_message,
    parse_params,
    v1_ready_at,
)
from repid.brokers._v1_report import Budget, QueueReport
from repid.brokers.rabbitmq import _codec as codec
from repid.brokers.rabbitmq import _topology as topology
from repid.data import Parameters
from repid.errors import BrokerConnectionError, PayloadDecodeError, RepidError

#: the header of a held message naming its category (ready, delayed, dead), or
#: `raw-<category>` for a 1.x message that could not be converted (kept byte for byte)
HEADER_CATEGORY = "x-repid-v1-category"
#: the header of a held raw message saying why it could not be converted
HEADER_PROBLEM = "x-repid-v1-problem"
#: 1.x's priority bound
V1_MAX_PRIORITY = 9


class V1MigrationError(RepidError):
    """The migration cannot go on; the message says why and what to do."""


def holding_queue(queue: str) -> str:
    """Where `queue`'s messages wait while its 1.x queues are replaced."""
    return f"{queue}:v1-migration"


def v1_parts(queue: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """1.x's queues of `queue` by category, in drain order, with their 1.x arguments."""
    return {
        "delayed": (f"{queue}:delayed", {"x-max-priority": V1_MAX_PRIORITY,
                                         "x-dead-letter-exchange": "",
                                         "x-dead-letter-routing-key": queue}),
        "ready": (queue, {"x-max-priority": V1_MAX_PRIORITY, "x-dead-letter-exchange": "",
                          "x-dead-letter-routing-key": f"{queue}:dead"}),
        "dead": (f"{queue}:dead", {"x-max-priority": V1_MAX_PRIORITY}),
    }


class _Link:
    """One AMQP connection; each probe gets a channel of its own (a refused declare closes
    its channel), and moves share one confirm channel."""

    def __init__(self, connection: AbstractConnection) -> None:
        self.connection = connection
        self._channel: AbstractChannel | None = None

    async def confirm_channel(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self.connection.channel(publisher_confirms=True,
                                                          on_return_raises=True)
        return self._channel

    @asynccontextmanager
    async def probe(self) -> AsyncIterator[AbstractChannel]:
        channel = await self.connection.channel(publisher_confirms=False)
        try:
            yield channel
        finally:
            if not channel.is_closed:
                with suppress(AMQPError, ConnectionError, RuntimeError):
                    await channel.close()


@asynccontextmanager
async def connect(dsn: str) -> AsyncIterator[_Link]:
    """A connection for a migration (BrokerConnectionError, password masked, if down)."""
    try:
        connection = await aiormq.connect(dsn)
    except (OSError, AMQPError, ConnectionError) as exc:
        raise BrokerConnectionError(
            f"cannot connect to RabbitMQ at {mask_dsn(dsn)}: {type(exc).__name__}") from None
    try:
        yield _Link(connection)
    finally:
        with suppress(AMQPError, ConnectionError, RuntimeError):
            await connection.close()


async def _counts(link: _Link, name: str) -> tuple[int, int] | None:
    """(messages, consumers) of queue `name`; None when it does not exist."""
    try:
        async with link.probe() as channel:
            ok = await channel.queue_declare(name, passive=True)
    except ChannelNotFoundEntity:
        return None
    return ok.message_count or 0, ok.consumer_count or 0


async def is_v1_queue(link: _Link, name: str, arguments: dict[str, Any]) -> bool:
    """True when queue `name` exists with 1.x's `arguments` (a declare with exactly those
    succeeds only then; it is made only after the queue was seen to exist)."""
    if await _counts(link, name) is None:
        return False
    try:
        async with link.probe() as channel:
            await channel.queue_declare(name, durable=True, arguments=arguments)
    except ChannelClosed:
        return False
    return True


async def v1_declared(link: _Link, queue: str) -> bool:
    """True when RabbitMQ holds `queue` (or its dead-letter queue) as repid 1.x declared it."""
    parts = v1_parts(queue)
    return any([await is_v1_queue(link, *parts[c]) for c in ("ready", "dead")])


async def explain_declare_failure(dsn: str, queue: str) -> str | None:
    """After RabbitMQ refused to declare `queue` (PRECONDITION_FAILED): a message saying it
    was declared by repid 1.x and naming the command that migrates it; None when it was
    not (or RabbitMQ cannot be asked)."""
    try:
        async with connect(dsn) as link:
            if not await v1_declared(link, queue):
                return None
    except (RepidError, AMQPError, OSError, ConnectionError):
        return None
    return (f"queue {queue!r} was declared by repid 1.x (x-max-priority 9, dead letters "
            f"to {queue + ':dead'!r} through the default exchange); this version declares "
            "it with other arguments, which RabbitMQ refuses while the 1.x queue exists. "
            "Run `repid migrate-v1 --apply` (with the same REPID_BROKER_DSN) to move its "
            "messages into the new queues; `repid migrate-v1` alone shows what it would "
            "move.")


async def survey(link: _Link, queue: str) -> QueueReport:
    """A dry run: the 1.x messages of `queue` per category, and any held by an unfinished
    run (a note). Only reads."""
    report = QueueReport(queue)
    for category, (name, arguments) in v1_parts(queue).items():
        if await is_v1_queue(link, name, arguments):
            counts = await _counts(link, name)
            if counts is not None:
                report.counts[category] += counts[0]
                if counts[1]:
                    report.notes.append(f"{name!r} has {counts[1]} consumers (repid 1.x "
                                        "workers?): stop them before --apply")
    held = await _counts(link, holding_queue(queue))
    if held is not None:
        report.notes.append(f"{held[0]} messages wait in {holding_queue(queue)!r} from an "
                            "unfinished run: --apply finishes it")
    return report


# --- moving ------------------------------------------------------------------------------


async def _get(channel: AbstractChannel, name: str) -> DeliveredMessage | None:
    message = await channel.basic_get(name, no_ack=False)
    return None if isinstance(message.delivery, Basic.GetEmpty) else message


async def _publish(channel: AbstractChannel, exchange: str, routing_key: str,
                   message: tuple[bytes, Basic.Properties]) -> None:
    """Publish and wait for RabbitMQ's confirm; V1MigrationError when it does not store it."""
    body, properties = message
    try:
        confirmation = await channel.basic_publish(
            body, exchange=exchange, routing_key=routing_key, properties=properties,
            mandatory=True)
    except AMQPError as exc:
        raise V1MigrationError(f"RabbitMQ did not store a message for {routing_key!r} "
                               f"({type(exc).__name__}: {exc}); nothing was lost: run "
                               "again") from None
    if not isinstance(confirmation, Basic.Ack):
        raise V1MigrationError(f"RabbitMQ refused a message for {routing_key!r}; nothing "
                               "was lost: run again")


def _held(message: DeliveredMessage, category: str) -> tuple[bytes, Basic.Properties]:
    """A 1.x message as it waits in the holding queue: converted, with its category; or
    byte for byte, with the problem, when it cannot be converted."""
    props = message.header.properties
    headers = dict(props.headers or {})
    try:
        decoded = json.loads(message.body)
        params = parse_params(decoded["parameters"])
        v1 = V1Message(id_=str(props.message_id), topic=str(headers.get("topic")),
                       queue=str(headers.get("queue")), priority=int(props.priority or 0),
                       payload=str(decoded["payload"]), params=params)
        ready_at = v1_ready_at(params) if category == "delayed" else None
        key, payload, converted = convert_message(v1, ready_at)
    except (PayloadDecodeError, ValueError, KeyError, TypeError) as exc:
        return message.body, Basic.Properties(
            headers={**headers, HEADER_CATEGORY: f"raw-{category}",
                     HEADER_PROBLEM: codec.dead_reason(f"{type(exc).__name__}: {exc}")},
            delivery_mode=codec.PERSISTENT, priority=props.priority,
            correlation_id=str(props.message_id or "?"),
            message_type=str(headers.get("topic") or "?"))
    body, properties = codec.encode(key, payload, converted)
    properties.headers = {**(properties.headers or {}), HEADER_CATEGORY: category}
    return body, properties


async def _drain(link: _Link, source: str, category: str, holding: str, budget: Budget,
                 moved: list[int]) -> bool:
    """Move every message of the 1.x queue `source` to `holding`; False when the budget
    ran out first."""
    channel = await link.confirm_channel()

    async def hold(message: DeliveredMessage) -> None:
        await _publish(channel, "", holding, _held(message, category))
        budget.spend()
        moved[0] += 1

    return await _move_each(channel, source, budget, hold)


async def _move_each(channel: AbstractChannel, source: str, budget: Budget,
                     move: Callable[[DeliveredMessage], Awaitable[None]]) -> bool:
    """Take the messages of `source` one at a time: `move` each (its copy confirmed
    elsewhere), then ack it, so a stop in between leaves a copy, never a loss. True once
    `source` is empty, False when the budget ran out first."""
    while True:
        if budget.spent:
            return False
        message = await _get(channel, source)
        if message is None:
            return True
        await move(message)
        await channel.basic_ack(message.delivery_tag or 0)


async def _replace(link: _Link, queue: str, declare: Callable[[str], Awaitable[None]]) -> None:
    """Delete 1.x's queues of `queue` (each only while empty and unused) and declare the
    queue as this version does (`declare`)."""
    for name, arguments in v1_parts(queue).values():
        counts = await _counts(link, name)
        if counts is None or not await is_v1_queue(link, name, arguments):
            continue
        if counts[0] or counts[1]:
            raise V1MigrationError(
                f"queue {name!r} still has {counts[0]} messages and {counts[1]} consumers; "
                "stop repid 1.x workers and producers of it, then run again")
        try:
            async with link.probe() as channel:
                await channel.queue_delete(name, if_unused=True, if_empty=True)
        except ChannelClosed as exc:
            raise V1MigrationError(f"RabbitMQ did not delete {name!r} ({exc}): it is in use "
                                   "or not empty; stop repid 1.x clients of it and run "
                                   "again") from None
    await declare(queue)


def _destination(queue: str, message: DeliveredMessage) -> tuple[str, str, dict[str, Any]]:
    """(exchange, routing key, headers to set) where a held message belongs now."""
    headers = message.header.properties.headers or {}
    category = str(headers.get(HEADER_CATEGORY, "ready"))
    drop: dict[str, Any] = {HEADER_CATEGORY: None, HEADER_PROBLEM: None}
    if category.startswith("raw-"):
        problem = headers.get(HEADER_PROBLEM, b"")
        text = problem.decode() if isinstance(problem, bytes) else str(problem)
        return "", topology.dead_queue(queue), {
            **drop, codec.HEADER_DEAD_REASON: codec.dead_reason(
                f"a repid 1.x message that could not be converted: {text}")}
    if category == "dead":
        return "", topology.dead_queue(queue), {**drop, codec.HEADER_DEAD_REASON:
                                                V1_DEAD_REASON}
    if category == "delayed":
        params = headers.get(codec.HEADER_PARAMS)
        ready_at = None
        with suppress(PayloadDecodeError, TypeError):
            ready_at = Parameters.decode(
                params.decode() if isinstance(params, bytes) else str(params)).ready_at
        seconds = topology.delay_seconds(ready_at)
        if seconds:
            return topology.entry_exchange(), topology.delay_routing_key(seconds, queue), drop
    return "", queue, drop


def _category(message: DeliveredMessage) -> str:
    value = (message.header.properties.headers or {}).get(HEADER_CATEGORY, "ready")
    text = value.decode() if isinstance(value, bytes) else str(value)
    return text.removeprefix("raw-")


async def _deliver(link: _Link, queue: str, budget: Budget, report: QueueReport) -> bool:
    """Publish each held message where it belongs now, then ack it; a second copy of one
    (same id and category, left by a stop between a confirm and its ack) is dropped.
    False when the budget ran out first."""
    channel = await link.confirm_channel()
    seen: set[tuple[str, str]] = set()

    async def deliver(message: DeliveredMessage) -> None:
        category = _category(message)
        identity = (str(message.header.properties.correlation_id), category)
        if identity not in seen:
            exchange, routing_key, headers = _destination(queue, message)
            await _publish(channel, exchange, routing_key, codec.copy(message, headers))
            seen.add(identity)
            report.counts[category] += 1
            budget.spend()

    return await _move_each(channel, holding_queue(queue), budget, deliver)


async def migrate_queue(link: _Link, queue: str, *,
                        declare: Callable[[str], Awaitable[None]],
                        budget: Budget | None = None) -> QueueReport:
    """Move `queue`'s 1.x messages into the current topology (the three steps above);
    `declare` declares the queue as this version does. The report counts the messages
    delivered to the new queues, per category."""
    report = QueueReport(queue)
    budget = budget or Budget()
    parts = v1_parts(queue)
    holding = holding_queue(queue)
    found = {c: await is_v1_queue(link, *parts[c]) for c in parts}
    if not any(found.values()) and await _counts(link, holding) is None:
        return report
    for category, (name, _) in parts.items():
        counts = await _counts(link, name) if found[category] else None
        if counts is not None and counts[1]:
            raise V1MigrationError(
                f"queue {name!r} has {counts[1]} consumers (repid 1.x workers?); stop them, "
                "then run again (nothing was changed)")
    async with link.probe() as channel:
        await channel.queue_declare(holding, durable=True)
    held = [0]
    for category, (name, _) in parts.items():
        if found[category] and not await _drain(link, name, category, holding, budget, held):
            report.notes.append(f"stopped at the --limit after holding {held[0]} messages "
                                f"in {holding!r}; run again to finish")
            return report
    await _replace(link, queue, declare)
    if not await _deliver(link, queue, budget, report):
        report.notes.append(f"stopped at the --limit; the rest wait in {holding!r}; run "
                            "again to finish")
        return report
    try:
        async with link.probe() as channel:
            await channel.queue_delete(holding, if_unused=True, if_empty=True)
    except ChannelClosed:
        report.notes.append(f"{holding!r} was not deleted (in use or not empty); run again")
    return report
