"""`repid dead list|requeue|delete QUEUE`: inspect dead-lettered messages, send them back
to their queue, or delete them; one by `--id`, or all of them."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import click

from repid.cli._loading import CliError
from repid.cli._messages import dead_reason, message_json, result_id, scan
from repid.cli._render import amount, echo_json, shorten, when
from repid.cli._session import app_option, bind, json_option, make_queue, run_with
from repid.connection import Connection
from repid.data import MessageCategory
from repid.message import Message

id_option = click.option("--id", "id_", metavar="ID",
                         help="Only the dead message with this id (see `repid dead list`).")


@click.group("dead")
def dead_group() -> None:
    """Inspect dead-lettered messages, send them back to their queue, or delete them."""


#: what `dead list` shows in place of the job of a message that cannot be decoded
POISON_JOB = "(cannot be decoded)"


def dead_line(message: Message) -> str:
    """One line about a dead message: id, job name, retries done of those allowed, and
    why it died when the broker kept the reason (`DEAD_REASON_HEADER`).

    Retries, not runs: a message dead-lettered before it ran (expired) has run zero times,
    and `already_tried` counts exactly the retries it got either way. A poison message
    (it cannot be decoded) has no job or retries to show: it says so instead."""
    key, params = message.key, message.parameters
    if message.is_poison:
        line = f"{key.id_}  {POISON_JOB}"
    else:
        retries = params.retries
        line = (f"{key.id_}  {key.topic}  retries: {retries.already_tried} of "
                f"{retries.max_amount}")
    reason = dead_reason(params)
    if reason:
        line += f"  reason: {shorten(reason, 1000)}"
    return line


def detail_line(message: Message) -> str:
    """The second, indented line about a dead message: its result id, when it was sent
    (enqueued or requeued: no broker records when a message died) and its arguments,
    shortened; for a poison message, its raw stored body (nothing else is known)."""
    if message.is_poison:
        return f"    result id: -  sent: -  body: {shorten(message.raw_payload)}"
    params = message.parameters
    return (f"    result id: {result_id(params) or '-'}  sent: {when(params.timestamp)}  "
            f"args: {shorten(message.raw_payload)}")


def dead_json(message: Message) -> dict[str, Any]:
    """Everything about a dead message, for `--json`; `poison` tells one that cannot be
    decoded: its `args` is the raw stored body, and what decoding would have told (job,
    retries, when it was sent, timeout) is null."""
    return with_poison(message_json(message.key, message.raw_payload, message.parameters,
                                    MessageCategory.DEAD), message.is_poison)


def with_poison(document: dict[str, Any], poison: bool) -> dict[str, Any]:
    """A message's `--json` document with its `poison` flag; what a poison message's
    decoding would have told (job, retries, when it was sent, timeout) set to null."""
    document["poison"] = poison
    if poison:
        document.update(job=None, retries=None, sent=None, timeout=None)
    return document


@dead_group.command("list")
@click.argument("queue_name", metavar="QUEUE")
@app_option
@json_option
def list_command(queue_name: str, app: str | None, as_json: bool) -> None:
    """List the dead-lettered messages of QUEUE (they stay dead): id, job, retries, reason,
    result id, when it was sent, and its arguments."""
    queue = make_queue(queue_name)

    async def action(connection: Connection) -> list[dict[str, Any]]:
        found = []
        (bound,) = bind([queue], connection)
        async with aclosing(scan(bound, MessageCategory.DEAD)) as messages:
            async for message in messages:
                if not as_json:
                    click.echo(dead_line(message))
                    click.echo(detail_line(message))
                found.append(dead_json(message))
        return found

    found = run_with(app, action)
    if as_json:
        echo_json(found)
    else:
        click.echo(f"{amount(len(found), 'dead message')} in {queue.name}")


def settle_dead(app: str | None, queue_name: str, id_: str | None,
                verb: str) -> tuple[int, list[str]]:
    """`reschedule` (send back) or `ack` (delete) the dead messages of a queue: all of them,
    or those with id `id_`; how many, and the ids of the poison messages a `reschedule`
    left alone (they cannot be decoded, so they can only be deleted)."""
    queue = make_queue(queue_name)

    async def action(connection: Connection) -> tuple[int, list[str]]:
        done, poison = 0, []
        (bound,) = bind([queue], connection)
        async with aclosing(scan(bound, MessageCategory.DEAD)) as messages:
            async for message in messages:
                if id_ is not None and message.key.id_ != id_:
                    continue
                if verb == "reschedule" and message.is_poison:
                    poison.append(message.key.id_)
                    continue
                await getattr(message, verb)()
                done += 1
        return done, poison

    done, poison = run_with(app, action)
    if id_ is not None and done == 0 and not poison:
        raise CliError(f"no dead message with id {id_!r} in {queue.name}: see "
                       f"`repid dead list {queue.name}`")
    return done, poison


@dead_group.command("requeue")
@click.argument("queue_name", metavar="QUEUE")
@id_option
@app_option
def requeue_command(queue_name: str, id_: str | None, app: str | None) -> None:
    """Send the dead-lettered messages of QUEUE (or the one with --id) back to it, with
    their tries reset."""
    done, poison = settle_dead(app, queue_name, id_, "reschedule")
    if id_ is not None and poison:
        raise CliError(f"dead message {id_!r} in {queue_name} cannot be decoded, so it cannot "
                       f"run again: delete it with `repid dead delete {queue_name} --id "
                       f"{id_}`")
    click.echo(f"requeued {amount(done, 'dead message')} to {queue_name}")
    if poison:
        click.echo(f"left {len(poison)} that cannot be decoded (delete them with `repid dead "
                   f"delete {queue_name} --id ID`): {', '.join(poison)}")


@dead_group.command("delete")
@click.argument("queue_name", metavar="QUEUE")
@id_option
@click.option("--all", "all_", is_flag=True, help="Every dead message of QUEUE.")
@click.option("--yes", is_flag=True, help="With --all: do not ask for confirmation.")
@app_option
def delete_command(queue_name: str, id_: str | None, all_: bool, yes: bool,
                   app: str | None) -> None:
    """Delete the dead-lettered message of QUEUE with --id, or all of them with --all."""
    if (id_ is None) == (not all_):
        raise CliError("give --id ID to delete one dead message, or --all to delete every "
                       "one (not both)")
    if all_ and not yes:
        click.confirm(f"Delete every dead message of {queue_name}?", abort=True)
    done, _ = settle_dead(app, queue_name, id_, "ack")
    click.echo(f"deleted {amount(done, 'dead message')} from {queue_name}")
