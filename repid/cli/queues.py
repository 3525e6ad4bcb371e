"""`repid queues declare|flush|delete|stats NAME...` and `repid dead list|requeue QUEUE`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from repid.brokers.base import DEAD_REASON_HEADER
from repid.cli.loading import CliError, connect, load_connection
from repid.cli.logs import quiet_logging
from repid.connection import Connection
from repid.data import MessageCategory, Parameters, RoutingKey
from repid.errors import QueueNotDeclaredError, RepidError
from repid.queue import Queue

T = TypeVar("T")

STATS_COLUMNS = ("ready", "delayed", "in_flight", "dead")

app_option = click.option(
    "--app", metavar="MODULE:ATTR",
    help="A Repid or Connection to use; default: the REPID_*_DSN environment variables.")


def make_queues(names: tuple[str, ...]) -> list[Queue]:
    """Queue objects for `names`, checked before anything connects."""
    try:
        return [Queue(name) for name in names]
    except ValueError as exc:
        raise CliError(str(exc)) from None


def run_with(app: str | None, action: Callable[[Connection], Awaitable[T]]) -> T:
    """Connect, run `action`, disconnect."""
    quiet_logging()
    connection = load_connection(app)

    async def go() -> T:
        await connect(connection)
        try:
            return await action(connection)
        except QueueNotDeclaredError as exc:
            raise CliError(f"queue {exc.queue!r} is not declared: create it with "
                           f"`repid queues declare {exc.queue}`") from None
        except (RepidError, ConnectionError) as exc:
            raise CliError(f"{type(exc).__name__}: {exc}") from None
        finally:
            await connection.disconnect()

    return asyncio.run(go())


def bind(queues: list[Queue], connection: Connection) -> list[Queue]:
    """The same queues, on `connection`."""
    return [Queue(queue.name, _connection=connection) for queue in queues]


def on_each_queue(names: tuple[str, ...], app: str | None, verb: str, past: str) -> None:
    """Call `Queue.<verb>()` on each named queue, saying `<past> <name>` after each."""
    queues = make_queues(names)

    async def action(connection: Connection) -> None:
        for queue in bind(queues, connection):
            await getattr(queue, verb)()
            click.echo(f"{past} {queue.name}")

    run_with(app, action)


@click.group("queues")
def queues_group() -> None:
    """Declare, flush or delete queues, and show their message counts."""


@queues_group.command("declare")
@click.argument("names", nargs=-1, required=True)
@app_option
def declare_command(names: tuple[str, ...], app: str | None) -> None:
    """Create queues (with their delayed and dead-letter parts); idempotent."""
    on_each_queue(names, app, "declare", "declared")


@queues_group.command("flush")
@click.argument("names", nargs=-1, required=True)
@app_option
def flush_command(names: tuple[str, ...], app: str | None) -> None:
    """Remove every message of queues: ready, delayed and dead; on Redis and in memory
    also those being processed (their settles then have no effect)."""
    on_each_queue(names, app, "flush", "flushed")


@queues_group.command("delete")
@click.argument("names", nargs=-1, required=True)
@app_option
def delete_command(names: tuple[str, ...], app: str | None) -> None:
    """Delete queues and every message in them."""
    on_each_queue(names, app, "delete", "deleted")


def stats_table(stats: dict[str, dict[str, int] | None]) -> str:
    """A text table of queue counts; `-` where the broker cannot tell."""
    rows: list[tuple[str, ...]] = [("queue", *STATS_COLUMNS)]
    for name, counts in stats.items():
        if counts is not None:
            rows.append((name, *(str(counts[c]) if counts[c] >= 0 else "-"
                                 for c in STATS_COLUMNS)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    widths[0] = max(widths[0], *(len(name) for name in stats))
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines += [f"{name.ljust(widths[0])}  not declared"
              for name, counts in stats.items() if counts is None]
    return "\n".join(lines)


@queues_group.command("stats")
@click.argument("names", nargs=-1, required=True)
@app_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def stats_command(names: tuple[str, ...], app: str | None, as_json: bool) -> None:
    """Show ready (depth), delayed, in-flight and dead-letter counts of queues."""
    queues = make_queues(names)

    async def action(connection: Connection) -> dict[str, dict[str, int] | None]:
        found: dict[str, dict[str, int] | None] = {}
        for queue in bind(queues, connection):
            try:
                found[queue.name] = await queue.stats()
            except KeyError:
                found[queue.name] = None
        return found

    stats = run_with(app, action)
    click.echo(json.dumps(stats) if as_json else stats_table(stats))


@click.group("dead")
def dead_group() -> None:
    """Inspect dead-lettered messages and send them back to their queue."""


def dead_line(key: RoutingKey, params: Parameters) -> str:
    """One line about a dead message: id, job name, retries done of those allowed, and
    why it died when the broker kept the reason (`DEAD_REASON_HEADER`).

    Retries, not runs: a message dead-lettered before it ran (expired, undecodable) has
    run zero times, and `already_tried` counts exactly the retries it got either way."""
    retries = params.retries
    line = (f"{key.id_}  {key.topic}  retries: {retries.already_tried} of "
            f"{retries.max_amount}")
    reason = params.headers.get(DEAD_REASON_HEADER)
    if reason:
        line += f"  reason: {' '.join(reason.split())}"  # one line per message
    return line


@dead_group.command("list")
@click.argument("queue_name", metavar="QUEUE")
@app_option
def list_command(queue_name: str, app: str | None) -> None:
    """List the dead-lettered messages of QUEUE (they stay dead): id, job name, retries
    done of those allowed, and the reason it was dead-lettered when known."""
    (queue,) = make_queues((queue_name,))

    async def action(connection: Connection) -> int:
        count = 0
        (bound,) = bind([queue], connection)
        async for message in bound.get_messages(category=MessageCategory.DEAD,
                                                stop_when_empty=True):
            click.echo(dead_line(message.key, message.parameters))
            count += 1
        return count

    count = run_with(app, action)
    click.echo(f"{count} dead messages in {queue.name}")


@dead_group.command("requeue")
@click.argument("queue_name", metavar="QUEUE")
@app_option
def requeue_command(queue_name: str, app: str | None) -> None:
    """Send every dead-lettered message of QUEUE back to it, with its tries reset."""
    (queue,) = make_queues((queue_name,))

    async def action(connection: Connection) -> int:
        count = 0
        (bound,) = bind([queue], connection)
        async for message in bound.get_messages(category=MessageCategory.DEAD,
                                                stop_when_empty=True):
            await message.reschedule()
            count += 1
        return count

    count = run_with(app, action)
    click.echo(f"requeued {count} dead messages to {queue.name}")
