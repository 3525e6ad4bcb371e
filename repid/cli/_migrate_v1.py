"""`repid migrate-v1 [--apply]`: move what repid 1.x left in Redis or RabbitMQ into the
current layout (ready, delayed and dead messages; args and result buckets).

A dry run (the default) only reads and prints what `--apply` would move. `--apply` moves
each message and bucket whole (see `repid.brokers.redis.v1_migration` and
`repid.brokers.rabbitmq.v1_migration` for what each step guarantees); it can be stopped
at any point and run again, and a run with nothing left changes nothing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import click

from repid._validation import check_name
from repid.brokers._v1_report import BucketReport, Budget, QueueReport
from repid.cli._loading import (
    ARGS_BUCKET_ENV,
    BROKER_ENV,
    MESSAGE_SCHEMES,
    RESULTS_BUCKET_ENV,
    CliError,
    safe_dsn,
)
from repid.cli._logs import quiet_logging
from repid.cli._render import amount
from repid.errors import RepidError

Output = Callable[[str], None]


def _kind(dsn: str, what: str) -> str:
    """'redis' or 'amqp' for a DSN, else a CliError."""
    scheme = urlsplit(dsn).scheme.lower() if "://" in dsn else ""
    kind = MESSAGE_SCHEMES.get(scheme)
    if kind not in ("redis", "amqp"):
        raise CliError(f"{what} {safe_dsn(dsn)} is not a Redis (redis://, rediss://) or "
                       "RabbitMQ (amqp://, amqps://) DSN; repid 1.x data lives only there")
    return kind


def _queue_line(report: QueueReport) -> str:
    counts = ", ".join(f"{name} {count}" for name, count in report.counts.items())
    return f"queue {report.queue}: {counts}"


def _bucket_line(report: BucketReport) -> str:
    return (f"buckets in {report.where}: args {report.counts['args']}, "
            f"result {report.counts['result']}")


def _details(lines: list[str], echo: Output) -> None:
    for line in lines:
        echo(f"  {line}")


async def _redis_run(dsn: str, queues: list[str], prefix: str, apply: bool, budget: Budget,
                     echo: Output) -> int:
    from repid.brokers.redis import v1_migration as redis_v1

    messages = 0
    client = await redis_v1.open_client(dsn)
    try:
        names = queues or await redis_v1.v1_queues(client)
        for queue in names:
            report = await redis_v1.migrate_queue(client, queue, prefix=prefix, apply=apply,
                                                  budget=budget)
            messages += report.total
            echo(_queue_line(report))
            _details([*report.skipped, *report.notes], echo)
        running = await redis_v1.in_flight(client)
        if running:
            echo(f"repid 1.x workers are running {amount(running, 'message')}: left alone; "
                 "run again once those workers stopped to move what they put back")
    finally:
        await client.aclose()
    return messages


async def _bucket_run(bucket_dsns: list[str], prefix: str, apply: bool, budget: Budget,
                      echo: Output) -> int:
    from repid.brokers.redis import v1_migration as redis_v1

    total = 0
    for bucket_dsn in bucket_dsns:
        client = await redis_v1.open_client(bucket_dsn)
        try:
            found = await redis_v1.migrate_buckets(client, safe_dsn(bucket_dsn),
                                                   prefix=prefix, apply=apply, budget=budget)
        finally:
            await client.aclose()
        total += found.total
        echo(_bucket_line(found))
        _details(found.skipped, echo)
    return total


async def _rabbit_run(dsn: str, queues: list[str], apply: bool, budget: Budget,
                      echo: Output) -> int:
    from repid.brokers.rabbitmq import RabbitMessageBroker
    from repid.brokers.rabbitmq import v1_migration as rabbit_v1

    if not queues:
        raise CliError("RabbitMQ cannot list its queues over AMQP: name the queues repid "
                       "1.x declared with --queue NAME (repeat it for more)")
    messages = 0
    broker = RabbitMessageBroker(dsn, connection_name="repid-migrate-v1")
    connected = False

    async def declare(queue: str) -> None:
        nonlocal connected
        if not connected:
            await broker.connect()
            connected = True
        await broker.queue_declare(queue)

    try:
        async with rabbit_v1.connect(dsn) as link:
            for queue in queues:
                if apply:
                    report = await rabbit_v1.migrate_queue(link, queue, declare=declare,
                                                           budget=budget)
                else:
                    report = await rabbit_v1.survey(link, queue)
                messages += report.total
                echo(_queue_line(report))
                _details([*report.skipped, *report.notes], echo)
    finally:
        if connected:
            await broker.disconnect()
    return messages


def _bucket_dsns(given: tuple[str, ...], dsn: str, kind: str) -> list[str]:
    """The Redis databases to look for 1.x buckets in: those given, else the bucket DSN
    variables, else the broker's own database when it is Redis."""
    found = list(given) or [value.strip() for name in (ARGS_BUCKET_ENV, RESULTS_BUCKET_ENV)
                            if (value := os.environ.get(name, "").strip())]
    if not found and kind == "redis":
        found = [dsn]
    for bucket_dsn in found:
        if _kind(bucket_dsn, "bucket DSN") != "redis":
            raise CliError(f"bucket DSN {safe_dsn(bucket_dsn)} is not Redis; repid 1.x "
                           "kept buckets in Redis only")
    return list(dict.fromkeys(found))


def _checked_queues(names: tuple[str, ...]) -> list[str]:
    try:
        return [check_name(name, "queue name") for name in names]
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _run(go: Callable[[], Awaitable[None]]) -> None:
    async def guarded() -> None:
        try:
            await go()
        except (RepidError, ConnectionError, OSError) as exc:
            raise CliError(f"{type(exc).__name__}: {exc}") from None

    asyncio.run(guarded())


@click.command("migrate-v1")
@click.option("--apply", "apply", is_flag=True,
              help="Move the data; without it, only print what would be moved.")
@click.option("--dsn", metavar="DSN", help=f"The broker's DSN; default: ${BROKER_ENV}.")
@click.option("--queue", "queues", metavar="NAME", multiple=True,
              help="A queue to migrate (repeat for more); default on Redis: every queue "
                   "repid 1.x left keys for. Required on RabbitMQ.")
@click.option("--bucket-dsn", "bucket_dsns", metavar="DSN", multiple=True,
              help=f"A Redis holding repid 1.x buckets (repeat for more); default: "
                   f"${ARGS_BUCKET_ENV} and ${RESULTS_BUCKET_ENV}, else the broker's DSN "
                   "when it is Redis.")
@click.option("--prefix", default="repid", show_default=True,
              help="The key prefix of the Redis brokers (their `prefix=`).")
@click.option("--limit", type=click.IntRange(min=1), metavar="N",
              help="Move at most N messages and buckets, then stop (run again for the rest).")
def migrate_v1_command(apply: bool, dsn: str | None, queues: tuple[str, ...],
                       bucket_dsns: tuple[str, ...], prefix: str, limit: int | None) -> None:
    """Move the messages and buckets repid 1.x left in Redis or RabbitMQ into the layout
    of this version: ready, delayed and dead messages, args and result buckets.

    Prints, per queue and category, what it would move; --apply moves it. Safe to stop
    and to run again: each message moves whole, none is lost or moved twice.
    """
    quiet_logging()
    dsn = (dsn or os.environ.get(BROKER_ENV, "")).strip()
    if not dsn:
        raise CliError(f"no broker: pass --dsn DSN or set {BROKER_ENV} (redis:// or amqp://)")
    kind = _kind(dsn, "broker DSN")
    names = _checked_queues(queues)
    buckets = _bucket_dsns(bucket_dsns, dsn, kind)
    budget = Budget(limit)
    echo: Output = click.echo
    head = "moving" if apply else "dry run (nothing is changed; --apply moves it):"
    echo(f"{head} repid 1.x data in {safe_dsn(dsn)}")
    totals = [0, 0]

    async def go() -> None:
        if kind == "redis":
            totals[0] = await _redis_run(dsn, names, prefix, apply, budget, echo)
        else:
            totals[0] = await _rabbit_run(dsn, names, apply, budget, echo)
        totals[1] = await _bucket_run(buckets, prefix, apply, budget, echo)

    _run(go)
    verb = "moved" if apply else "would move"
    echo(f"{verb} {amount(totals[0], 'message')} and {amount(totals[1], 'bucket')}")
