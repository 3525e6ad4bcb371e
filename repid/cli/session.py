"""What every one-shot command shares: the `--app` and `--json` options, queue names checked
before connecting, and one connect-run-disconnect around the command's work."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from repid.cli.loading import CliError, connect, load_connection
from repid.cli.logs import quiet_logging
from repid.connection import Connection
from repid.errors import QueueNotDeclaredError, RepidError
from repid.queue import Queue

T = TypeVar("T")

#: the environment variable `--app` defaults to
APP_ENV = "REPID_APP"

app_option = click.option(
    "--app", metavar="MODULE:ATTR", envvar=APP_ENV,
    help=f"A Repid or Connection to use [default: ${APP_ENV}, else the REPID_*_DSN "
         "environment variables].")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one JSON document instead of text.")


def make_queues(names: tuple[str, ...]) -> list[Queue]:
    """Queue objects for `names`, checked before anything connects."""
    try:
        return [Queue(name) for name in names]
    except ValueError as exc:
        raise CliError(str(exc)) from None


def make_queue(name: str) -> Queue:
    """One Queue object for `name`, checked before anything connects."""
    (queue,) = make_queues((name,))
    return queue


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
