"""`repid dead list|requeue|delete QUEUE`: inspect dead-lettered messages, send them back
to their queue, or delete them; one by `--id`, or all of them."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import click

from repid.cli.loading import CliError
from repid.cli.messages import dead_reason, message_json, result_id, scan
from repid.cli.render import echo_json, shorten, when
from repid.cli.session import app_option, bind, json_option, make_queue, run_with
from repid.connection import Connection
from repid.data import MessageCategory, Parameters, RoutingKey

id_option = click.option("--id", "id_", metavar="ID",
                         help="Only the dead message with this id (see `repid dead list`).")


@click.group("dead")
def dead_group() -> None:
    """Inspect dead-lettered messages, send them back to their queue, or delete them."""


def dead_line(key: RoutingKey, params: Parameters) -> str:
    """One line about a dead message: id, job name, retries done of those allowed, and
    why it died when the broker kept the reason (`DEAD_REASON_HEADER`).

    Retries, not runs: a message dead-lettered before it ran (expired, undecodable) has
    run zero times, and `already_tried` counts exactly the retries it got either way."""
    retries = params.retries
    line = (f"{key.id_}  {key.topic}  retries: {retries.already_tried} of "
            f"{retries.max_amount}")
    reason = dead_reason(params)
    if reason:
        line += f"  reason: {shorten(reason, 1000)}"
    return line


def detail_line(payload: str, params: Parameters) -> str:
    """The second, indented line about a dead message: its result id, when it was sent
    (no broker records when a message died) and its arguments, shortened."""
    return (f"    result: {result_id(params) or '-'}  sent: {when(params.timestamp)}  "
            f"args: {shorten(payload)}")


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
                    click.echo(dead_line(message.key, message.parameters))
                    click.echo(detail_line(message.raw_payload, message.parameters))
                found.append(message_json(message.key, message.raw_payload,
                                          message.parameters, MessageCategory.DEAD))
        return found

    found = run_with(app, action)
    if as_json:
        echo_json(found)
    else:
        click.echo(f"{len(found)} dead messages in {queue.name}")


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
    click.echo(f"requeued {done} dead messages to {queue_name}")
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
    click.echo(f"deleted {done} dead messages from {queue_name}")
