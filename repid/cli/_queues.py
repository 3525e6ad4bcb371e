"""`repid queues declare|flush|delete|stats NAME...` and `repid queues list`."""

from __future__ import annotations

import click

from repid.cli._loading import CliError
from repid.cli._render import count, echo_json, table
from repid.cli._session import app_option, bind, json_option, make_queues, run_with
from repid.connection import Connection

STATS_COLUMNS = ("ready", "delayed", "in_flight", "dead")

#: what `repid queues list` says when the broker cannot list its queues
CANNOT_LIST = {
    "rabbitmq": "RabbitMQ lists queues only through its management API: set "
                "REPID_RABBITMQ_MANAGEMENT_URL (e.g. http://USER:PASSWORD@127.0.0.1:15672) "
                "or pass --app with RabbitMessageBroker(management_url=...)",
}


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
    """List, declare, flush or delete queues, and show their message counts."""


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
    width = max(len("queue"), *(len(name) for name in stats))
    rows: list[tuple[str, ...]] = [("queue".ljust(width), *STATS_COLUMNS)]
    rows += [(name.ljust(width), *(count(counts[c]) for c in STATS_COLUMNS))
             for name, counts in stats.items() if counts is not None]
    lines = table(rows)
    lines += [f"{name.ljust(width)}  not declared"
              for name, counts in stats.items() if counts is None]
    return "\n".join(lines)


async def counts_of(connection: Connection,
                    names: list[str]) -> dict[str, dict[str, int] | None]:
    """The counts of each queue; None for one the broker knows is not declared."""
    found: dict[str, dict[str, int] | None] = {}
    for queue in bind(make_queues(tuple(names)), connection):
        try:
            found[queue.name] = await queue.stats()
        except KeyError:
            found[queue.name] = None
    return found


@queues_group.command("stats")
@click.argument("names", nargs=-1, required=True)
@app_option
@json_option
def stats_command(names: tuple[str, ...], app: str | None, as_json: bool) -> None:
    """Show ready (depth), delayed, in-flight and dead-letter counts of queues."""
    make_queues(names)
    stats = run_with(app, lambda connection: counts_of(connection, list(names)))
    if as_json:
        echo_json(stats)
    else:
        click.echo(stats_table(stats))


@queues_group.command("list")
@app_option
@json_option
def list_command(app: str | None, as_json: bool) -> None:
    """List every declared queue with its ready, delayed, in-flight and dead counts."""

    async def action(connection: Connection) -> dict[str, dict[str, int] | None]:
        broker = connection.message_broker
        names = await broker.queue_names()
        if names is None:
            reason = CANNOT_LIST.get(broker.system, "it keeps no list of its queues")
            raise CliError(f"{type(broker).__name__} cannot list queues: {reason}")
        return await counts_of(connection, names)

    stats = run_with(app, action)
    if as_json:
        # a queue deleted between the listing and its counts is left out
        echo_json([{"queue": name, **counts} for name, counts in stats.items()
                   if counts is not None])
    elif not stats:
        click.echo("no queues declared")
    else:
        click.echo(stats_table({name: c for name, c in stats.items() if c is not None}))
