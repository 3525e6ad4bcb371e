"""What a new user meets in the first hour, each answered with its cause: a mistyped queue,
a message id looked up without its queue, arguments that would not stay JSON, `--queues`
naming nothing, a connection refused by the server, and dead messages that cannot be
decoded (poison), listed, shown and deleted from the command line."""

from __future__ import annotations

import asyncio
import json
import uuid
from types import SimpleNamespace
from urllib.parse import urlsplit, urlunsplit

import pytest
from cli_helpers import APP, delete_queue
from click.testing import CliRunner, Result

from repid import Connection, InMemoryMessageBroker, Parameters, Queue, RoutingKey
from repid.brokers.base import DEAD_REASON_HEADER
from repid.cli import main
from repid.cli._dead import dead_json, dead_line, detail_line
from repid.cli._jobs import parse_args
from repid.cli._loading import CliError, connect, parse_queues
from repid.errors import BrokerConnectionError

MEMORY = {"REPID_BROKER_DSN": "memory://"}
SECRET = "n0t-th3-pa55w0rd"


def cli(*args: str, env: dict[str, str], code: int = 0) -> Result:
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == code, (result.output, result.stderr, result.exception)
    return result


def one_line(result: Result) -> str:
    """The one error line on stderr (exit code 2 checked by `cli`), without `Error: `."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert SECRET not in result.output + result.stderr
    return lines[0].removeprefix("Error: ")


# --- mistakes, in memory ------------------------------------------------------------------


def test_a_mistyped_queue_is_not_declared_and_the_error_points_to_the_declared_ones() -> None:
    line = one_line(cli("dead", "list", "emials", env=MEMORY, code=2))
    assert line == ("queue 'emials' is not declared: check its name (`repid queues list` "
                    "shows the declared ones), or declare it with `repid queues declare "
                    "emials`")


def test_jobs_show_of_an_id_without_its_queue_asks_for_the_queue() -> None:
    line = one_line(cli("jobs", "show", "f" * 32, env=MEMORY, code=2))
    assert line == (f"'{'f' * 32}' is not a result id (no results bucket to look in), and "
                    "queue 'default', where a message id is looked for, is not declared: "
                    "give the message's queue with --queue QUEUE")


def test_jobs_show_of_an_unknown_id_says_a_message_that_ran_is_gone() -> None:
    app = ["--app", "tests.cli.cli_app:app"]
    cli("queues", "declare", "first_hour", *app, env={})
    text = cli("jobs", "show", "f" * 32, "--queue", "first_hour", *app, env={}).stdout
    assert "state: unknown" in text
    assert "one that ran is gone: look up its result id" in text


@pytest.mark.parametrize(("args", "expected"), [
    ('{"n": NaN}', "--args is not JSON (NaN is not a JSON number"),
    ('{"n": [Infinity]}', "--args is not JSON (Infinity is not a JSON number"),
    ('{"n": -Infinity}', "--args is not JSON (-Infinity is not a JSON number"),
    ('{"n": 1e400}', "--args is not JSON (1e400 is too large: it would become Infinity"),
    ("true", "--args is a JSON boolean, not an object"),
    ('"ann"', "--args is a JSON string, not an object"),
    ("null", "--args is a JSON null, not an object"),
])
def test_jobs_send_refuses_arguments_that_would_not_stay_json(args: str, expected: str) -> None:
    line = one_line(cli("jobs", "send", "work", "--args", args, env=MEMORY, code=2))
    assert line.startswith(expected), line


def test_ordinary_json_arguments_are_kept_as_given() -> None:
    assert parse_args('{"a": 1.5, "b": 10, "c": -2e3, "d": [true, null]}') == \
        {"a": 1.5, "b": 10, "c": -2000.0, "d": [True, None]}
    assert parse_args("[1, 2]") == [1, 2]
    assert parse_args(None) is None


def test_worker_queues_naming_no_queue_is_refused_not_read_as_every_queue() -> None:
    line = one_line(cli("worker", APP, "--queues", " , ", env=MEMORY, code=2))
    assert line == ("--queues ' , ' names no queue: give queue names separated by commas, "
                    "e.g. --queues emails,reports (leave it out for every queue)")
    assert parse_queues(None) == ()
    assert parse_queues(" a, b,,") == ("a", "b")


class _Refused(InMemoryMessageBroker):
    """A broker whose server refuses the connection, as repid's brokers report it."""

    async def connect(self) -> None:
        raise BrokerConnectionError("RabbitMQ at amqp://h/ refused the login of user 'u': "
                                    "check the password")


class _Broken(InMemoryMessageBroker):
    """A broker failing with an error that does not say what it was doing."""

    async def connect(self) -> None:
        raise OSError("boom")


def test_a_connection_refused_by_the_server_is_shown_as_the_broker_said_it() -> None:
    with pytest.raises(CliError) as refused:
        asyncio.run(connect(Connection(_Refused())))
    assert refused.value.message == ("RabbitMQ at amqp://h/ refused the login of user 'u': "
                                     "check the password")
    with pytest.raises(CliError) as broken:
        asyncio.run(connect(Connection(_Broken())))
    assert broken.value.message.startswith("cannot connect to InMemoryMessageBroker(")
    assert broken.value.message.endswith(": OSError: boom")


# --- poison messages, rendered --------------------------------------------------------------


def _dead(id_: str, payload: str, params: Parameters, *, poison: bool,
          topic: str = "") -> SimpleNamespace:
    """A stand-in for a dead `Message`: what `dead list` reads of one."""
    return SimpleNamespace(key=RoutingKey(id_, topic, "q"), raw_payload=payload,
                           parameters=params, is_poison=poison)


def test_a_poison_message_shows_its_reason_and_body_and_nothing_made_up() -> None:
    params = Parameters()
    params.headers[DEAD_REASON_HEADER] = "the stored message cannot be decoded: not JSON"
    message = _dead("bad-1", '1|1000|{not json\x1b[31m', params, poison=True)
    assert dead_line(message) == ("bad-1  (cannot be decoded)  reason: the stored message "  # type: ignore[arg-type]
                                  "cannot be decoded: not JSON")
    assert detail_line(message) == \
        "    result id: -  sent: -  body: 1|1000|{not json\\x1b[31m"  # type: ignore[arg-type]
    document = dead_json(message)  # type: ignore[arg-type]
    assert document["poison"] is True and document["args"] == "1|1000|{not json\x1b[31m"
    assert (document["job"], document["retries"], document["sent"], document["timeout"]) == \
        (None, None, None, None)
    assert document["reason"] == "the stored message cannot be decoded: not JSON"


def test_a_decoded_dead_message_shows_its_result_id_under_that_name() -> None:
    message = _dead("ok-1", '{"n":1}', Parameters(), poison=False, topic="work")
    assert dead_line(message) == "ok-1  work  retries: 0 of 0"  # type: ignore[arg-type]
    assert detail_line(message).startswith("    result id: -  sent: 20")  # type: ignore[arg-type]
    document = dead_json(message)  # type: ignore[arg-type]
    assert document["poison"] is False and document["job"] == "work"
    assert document["retries"] == {"done": 0, "allowed": 0}


# --- the real servers ---------------------------------------------------------------------


def _with_password(dsn: str, user: str, password: str, path: str | None = None) -> str:
    parts = urlsplit(dsn)
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, path=parts.path if path is None else path))


@pytest.mark.integration
def test_unknown_vhost_and_wrong_password_say_so_once(amqp_dsn: str) -> None:
    vhost = f"repid-missing-{uuid.uuid4().hex[:8]}"
    user = urlsplit(amqp_dsn).username or "guest"
    dsn = _with_password(amqp_dsn, user, urlsplit(amqp_dsn).password or "", f"/{vhost}")
    line = one_line(cli("queues", "stats", "q", env={"REPID_BROKER_DSN": dsn}, code=2))
    assert line.startswith("RabbitMQ at amqp://") and f"virtual host '{vhost}'" in line
    assert "RabbitMessageBroker(" not in line and "BrokerConnectionError" not in line

    wrong = _with_password(amqp_dsn, user, SECRET)
    line = one_line(cli("queues", "stats", "q", env={"REPID_BROKER_DSN": wrong}, code=2))
    assert line.startswith("RabbitMQ at amqp://") and f"refused the login of user '{user}'" \
        in line and f"{user}:***@" in line
    assert "RabbitMessageBroker(" not in line


@pytest.mark.integration
def test_a_password_for_a_redis_without_one_is_refused(redis_dsn: str) -> None:
    if urlsplit(redis_dsn).password:
        pytest.skip("this Redis has a password")
    dsn = _with_password(redis_dsn, "", SECRET)
    line = one_line(cli("queues", "stats", "q", env={"REPID_BROKER_DSN": dsn}, code=2))
    assert "the DSN gives a password, but Redis checks no password" in line


async def _poison_in(dsn: str, queue: str) -> None:
    """Declare `queue` on the real Redis and store one message in it that cannot be
    decoded; a consumer's look dead-letters it."""
    from redis.asyncio import Redis

    from repid.brokers.redis import RedisMessageBroker
    from repid.brokers.redis._keys import QueueKey, queue_keys

    broker = RedisMessageBroker(dsn=dsn)
    connection = Connection(broker)
    await connection.connect()
    raw = Redis.from_url(dsn)
    try:
        await Queue(queue, _connection=connection).declare()
        keys = queue_keys(broker.prefix, queue)
        await raw.hset(keys[QueueKey.MSGS], "bad-1", b"1|1000|{not json\x1b[31m")
        await raw.rpush(keys[QueueKey.READY1], "bad-1")
        consumer = broker.consume(queue)
        try:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(consumer.__anext__(), 0.5)
        finally:
            await consumer.finish()
    finally:
        await raw.aclose()
        await connection.disconnect()


@pytest.mark.integration
def test_poison_is_listed_shown_and_deleted_from_the_command_line(redis_dsn: str) -> None:
    queue = f"cli_poison_{uuid.uuid4().hex[:8]}"
    env = {"REPID_BROKER_DSN": redis_dsn}
    try:
        asyncio.run(_poison_in(redis_dsn, queue))
        listed = cli("dead", "list", queue, env=env).stdout.splitlines()
        assert listed[0].startswith("bad-1  (cannot be decoded)  reason: the stored message "
                                    "cannot be decoded")
        assert listed[1] == "    result id: -  sent: -  body: 1|1000|{not json\\x1b[31m"
        (document,) = json.loads(cli("dead", "list", queue, "--json", env=env).stdout)
        assert document["poison"] is True and document["sent"] is None
        shown = cli("jobs", "show", "bad-1", "--queue", queue, env=env).stdout
        assert "state: dead" in shown and "job: (cannot be decoded)" in shown
        assert f"delete it with `repid dead delete {queue} --id bad-1`" in shown
        assert "result id" not in shown and "retries" not in shown
        assert cli("dead", "delete", queue, "--id", "bad-1", env=env).stdout == \
            f"deleted 1 dead message from {queue}\n"
        assert json.loads(cli("dead", "list", queue, "--json", env=env).stdout) == []
    finally:
        delete_queue(redis_dsn, queue)


# --- the README -----------------------------------------------------------------------------


def test_the_readme_leads_to_the_command_page_and_lists_each_directory_once() -> None:
    from cli_helpers import ROOT

    readme = (ROOT / "README.md").read_text()
    assert "[The `repid` command](docs/cli.md)" in readme
    layout = readme.split("## Layout", 1)[1].split("```")[1].splitlines()
    named = [line.split()[0] for line in layout if line.startswith("  ") and line.split()
             and line.split()[0].endswith("/")]
    assert len(named) == len(set(named)), named


def test_jobs_send_help_says_the_name_is_not_checked_and_which_queue_to_give() -> None:
    text = " ".join(cli("jobs", "send", "--help", env={}).stdout.split())
    assert "NAME is the name of an actor; it is not checked here" in text
    assert "dead-lettered with a reason that starts \"no actor 'NAME'\"" in text
    assert "The queue to send to: the one the job's actor reads." in text
