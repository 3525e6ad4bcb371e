"""`repid jobs show ID` and `repid jobs send NAME`: a job's state and result, and enqueueing
one from a shell."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import click

from repid.brokers._poison import PoisonKey
from repid.cli._dead import POISON_JOB, with_poison
from repid.cli._loading import CliError
from repid.cli._messages import (
    PART_NAMES,
    Found,
    dead_reason,
    find_message,
    message_json,
    message_lines,
    result_json,
    result_lines,
    stored_result,
)
from repid.cli._render import echo_json, shorten
from repid.cli._session import app_option, bind, json_option, make_queue, run_with
from repid.connection import Connection
from repid.errors import QueueNotDeclaredError
from repid.job import Job

NO_RESULT = "no result stored (yet)"
NO_RESULTS_BUCKET = ("no results bucket to look in: set REPID_RESULTS_BUCKET_DSN, or pass "
                     "--app with a results_bucket_broker")


@click.group("jobs")
def jobs_group() -> None:
    """Show a job's state and result, or send a job."""


def poison_lines(found: Found) -> list[str]:
    """A dead message that cannot be decoded, as `name: value` lines: only its raw stored
    body and why it is dead are known (no job, arguments or result id)."""
    return [f"job: {POISON_JOB}", f"queue: {found.key.queue} (dead)",
            f"body: {shorten(found.payload, 1000)}",
            f"reason: {shorten(dead_reason(found.params) or '-', 1000)}",
            f"delete it with `repid dead delete {found.key.queue} --id {found.key.id_}`"]


def no_result(has_results: bool) -> str:
    """Why an id was not found as a result id."""
    return "no result stored under it" if has_results else "no results bucket to look in"


def state_of(document: dict[str, Any]) -> str:
    """ready, delayed or dead (where the message is), else succeeded or failed (its stored
    result), else unknown."""
    if document["message"] is not None:
        return str(document["message"]["part"])
    if document["result"] is not None:
        return "succeeded" if document["result"]["success"] else "failed"
    return "unknown"


@jobs_group.command("show")
@click.argument("id_", metavar="ID")
@click.option("--queue", "queue_name", default="default", show_default=True,
              help="Where to look for a message id.")
@click.option("--scan-limit", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Ready messages to look through at most (each is taken and given back).")
@app_option
@json_option
def show_command(id_: str, queue_name: str, scan_limit: int, app: str | None,
                 as_json: bool) -> None:
    """Show a job's state and result, by result id or by message id."""
    queue = make_queue(queue_name)

    async def action(connection: Connection) -> tuple[dict[str, Any], list[str]]:
        has_results = connection.results_bucket_broker is not None
        bucket = await stored_result(connection, id_)
        document: dict[str, Any] = {"id": id_, "state": "", "message": None,
                                    "result_id": None, "result": None}
        lines = [f"id: {id_}"]
        if bucket is not None:
            document.update(result_id=id_, result=result_json(bucket))
            lines += ["found: a result id", *result_lines(bucket)]
        else:
            (bound,) = bind([queue], connection)
            try:
                found = await find_message(connection, bound, id_, scan_limit)
            except QueueNotDeclaredError:
                raise CliError(f"{id_!r} is not a result id ({no_result(has_results)}), "
                               f"and queue {queue.name!r}, where a message id is looked "
                               "for, is not declared: give the message's queue with "
                               "--queue QUEUE") from None
            if found is None:
                lines.append(f"found: no message with this id in {queue.name} (ready, "
                             "delayed or dead; one being processed is not seen, one that "
                             "ran is gone: look up its result id), and "
                             f"{no_result(has_results)}")
            else:
                poison = isinstance(found.key, PoisonKey)
                document["message"] = with_poison(message_json(
                    found.key, found.payload, found.params, found.category), poison)
                lines.append(f"found: a message id, {PART_NAMES[found.category]} in "
                             f"{queue.name}")
                rid = found.params.result
                if poison:
                    lines += poison_lines(found)
                elif rid is None:
                    lines += [*message_lines(found), "result id: none (the job stores no "
                              "result)"]
                else:
                    lines += message_lines(found)
                    document["result_id"] = rid.id_
                    lines.append(f"result id: {rid.id_}")
                    result = await stored_result(connection, rid.id_)
                    if result is not None:
                        document["result"] = result_json(result)
                        lines += result_lines(result)
                    else:
                        lines.append(f"result: {NO_RESULT if has_results else NO_RESULTS_BUCKET}")
        document["state"] = state_of(document)
        lines.insert(1, f"state: {document['state']}")
        return document, lines

    document, lines = run_with(app, action)
    if as_json:
        echo_json(document)
    else:
        click.echo("\n".join(lines))


def parse_args(text: str | None) -> Any:
    """The `--args` JSON: an object (arguments by name) or an array."""
    if text is None:
        return None
    try:
        args = json.loads(text, parse_constant=not_json, parse_float=finite_float)
    except ValueError as exc:
        raise CliError(f"--args is not JSON ({exc}): give an object of argument names to "
                       """values, e.g. --args '{"to": "a@example.com"}'""") from None
    if not isinstance(args, (dict, list)):
        raise CliError(f"--args is a JSON {JSON_TYPES.get(type(args), 'value')}, not an "
                       """object: give the arguments by name, e.g. --args '{"n": 1}'""")
    return args


#: how `--args` names the JSON type it was given instead of an object
JSON_TYPES = {str: "string", int: "number", float: "number", bool: "boolean",
              type(None): "null"}


def not_json(name: str) -> float:
    """`NaN`, `Infinity` and `-Infinity`, which Python's json reads but JSON has not."""
    raise ValueError(f"{name} is not a JSON number; a job's arguments must stay JSON")


def finite_float(text: str) -> float:
    """A JSON number, refused when it is too large for a float (it would become inf)."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is too large: it would become Infinity, which is not a "
                         "JSON number")
    return value


@jobs_group.command("send")
@click.argument("name")
@click.option("--args", "args_json", metavar="JSON",
              help="The job's arguments, a JSON object: '{\"n\": 1}'.")
@click.option("--queue", "queue_name", default="default", show_default=True,
              help="The queue to send to: the one the job's actor reads.")
@click.option("--delay", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Run it no sooner than this many seconds from now.")
@click.option("--retries", type=click.IntRange(min=0), default=0, show_default=True,
              help="Retries allowed after a failed run.")
@app_option
@json_option
def send_command(name: str, args_json: str | None, queue_name: str, delay: float | None,
                 retries: int, app: str | None, as_json: bool) -> None:
    """Send a job NAME and print its message id and result id.

    NAME is the name of an actor; it is not checked here (this command does not load your
    actors): a job that no worker has an actor for is returned to its queue a few times,
    then dead-lettered with a reason that starts "no actor 'NAME'".
    """
    args = parse_args(args_json)
    queue = make_queue(queue_name)
    until = (None if delay is None
             else datetime.now(timezone.utc) + timedelta(seconds=delay))

    def make_job(connection: Connection | None) -> Job:
        try:
            return Job(name, queue=queue.name, args=args, retries=retries,
                       deferred_until=until, _connection=connection)
        except (TypeError, ValueError) as exc:
            raise CliError(str(exc)) from None

    make_job(None)  # a mistake is found before connecting

    async def action(connection: Connection) -> dict[str, Any]:
        sent = await make_job(connection).enqueue()
        result = sent.params.result
        return {"message_id": sent.id_, "result_id": None if result is None else result.id_,
                "job": name, "queue": queue.name}

    sent = run_with(app, action)
    if as_json:
        echo_json(sent)
        return
    click.echo(f"message id: {sent['message_id']}")
    click.echo(f"result id: {sent['result_id']}" if sent["result_id"] else
               "result id: none (no results bucket: set REPID_RESULTS_BUCKET_DSN to keep "
               "results)")
