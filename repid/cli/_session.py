"""What every one-shot command shares: the `--app` and `--json` options, queue names checked
before connecting, and one connect-run-disconnect around the command's work."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from repid.cli._loading import CliError, connect, load_connection
from repid.cli._logs import quiet_logging
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


def not_declared(queue: str) -> str:
    """What a command says of a queue the broker does not know: often a mistyped name, so
    it says where the declared names are before how to declare one."""
    return (f"queue {queue!r} is not declared: check its name (`repid queues list` shows the "
            f"declared ones), or declare it with `repid queues declare {queue}`")


def run_with(app: str | None, action: Callable[[Connection], Awaitable[T]]) -> T:
    """Connect, run `action`, disconnect."""
    quiet_logging()
    connection = load_connection(app)

    async def go() -> T:
        await connect(connection)
        try:
            return await action(connection)
        except QueueNotDeclaredError as exc:
            raise CliError(not_declared(exc.queue)) from None
        except (RepidError, ConnectionError) as exc:
            raise CliError(f"{type(exc).__name__}: {exc}") from None
        finally:
            await connection.disconnect()

    return asyncio.run(go())


def bind(queues: list[Queue], connection: Connection) -> list[Queue]:
    """The same queues, on `connection`."""
    return [Queue(queue.name, _connection=connection) for queue in queues]
