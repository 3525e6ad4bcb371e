"""`repid queues list`, `repid jobs send|show`, `repid dead list|requeue|delete` with
`--id`, and `repid worker --queues|--messages-limit`: through CliRunner in memory, and as
subprocesses (`python -m repid`) against the real Redis and RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cli_helpers import (
    APP,
    ROOT,
    cli_env,
    declare_queue,
    delete_queue,
    enqueue,
    lines,
    queue_stats,
    running,
    wait_for,
)
from click.testing import CliRunner, Result

from repid import Connection, Queue
from repid.cli import main

MANAGEMENT_URL = "http://guest:guest@127.0.0.1:15672"


def cli(*args: str, env: dict[str, str] | None = None, code: int = 0,
        stdin: str | None = None) -> Result:
    result = CliRunner().invoke(main, list(args), env=env, input=stdin)
    assert result.exit_code == code, (result.output, result.exception)
    return result


def python_m_repid(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m repid ARGS` as a subprocess; must exit 0."""
    done = subprocess.run([sys.executable, "-m", "repid", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done


async def _dead_letter(dsn: str, queue: str, count: int) -> None:
    """Take `count` ready messages and dead-letter them with a reason."""
    from repid.cli._loading import message_broker_from_dsn

    broker = message_broker_from_dsn(dsn)
    connection = Connection(broker)
    await connection.connect()
    try:
        async for message in Queue(queue, _connection=connection).get_messages():
            await broker.nack(message.key, "no retries left; last error:\n ValueError: x")
            count -= 1
            if not count:
                break
    finally:
        await connection.disconnect()


@pytest.fixture
def queue_name() -> str:
    return f"cli_{uuid.uuid4().hex[:10]}"


# --- in memory, through CliRunner ---------------------------------------------------------


def test_worker_refuses_an_unknown_queue_and_names_the_known_ones() -> None:
    result = cli("worker", APP, "--queues", "cli_test,nope", "--app",
                 "tests.cli.cli_app:app", code=2)
    assert result.stderr == ("Error: --queues: 'nope' not read by any actor of "
                             "'tests/cli/cli_app.py:worker'; its queues are: cli_test\n")


def test_dead_delete_needs_one_of_id_and_all_and_all_asks_first() -> None:
    env = {"REPID_BROKER_DSN": "memory://"}
    assert "give --id ID" in cli("dead", "delete", "q", env=env, code=2).stderr
    assert "give --id ID" in cli("dead", "delete", "q", "--id", "x", "--all", env=env,
                                 code=2).stderr
    refused = cli("dead", "delete", "q", "--all", env=env, code=1, stdin="n\n")
    assert "Delete every dead message of q?" in refused.output
    assert "Aborted!" in refused.output and "deleted" not in refused.output


def test_jobs_send_refuses_arguments_that_are_not_an_object() -> None:
    env = {"REPID_BROKER_DSN": "memory://"}
    assert "--args is not JSON" in cli("jobs", "send", "work", "--args", "{n: 1}", env=env,
                                       code=2).stderr
    assert "--args is a JSON number, not an object" in cli("jobs", "send", "work", "--args",
                                                           "3", env=env, code=2).stderr
    assert "--args is a JSON null" in cli("jobs", "send", "work", "--args", "null", env=env,
                                          code=2).stderr
    assert "job name 'bad name' is invalid" in cli("jobs", "send", "bad name", env=env,
                                                    code=2).stderr


def test_jobs_send_without_a_results_bucket_says_there_is_no_result_id() -> None:
    result = cli("jobs", "send", "work", "--args", '{"n": 1}', "--json",
                 env={"REPID_BROKER_DSN": "memory://"})
    sent = json.loads(result.stdout)
    assert sent["result_id"] is None and len(sent["message_id"]) == 32
    text = cli("jobs", "send", "work", env={"REPID_BROKER_DSN": "memory://"}).stdout
    assert text.splitlines()[1].startswith("result id: none (no results bucket")


def test_queues_list_says_when_rabbitmq_cannot_list(amqp_dsn: str) -> None:
    result = cli("queues", "list", env={"REPID_BROKER_DSN": amqp_dsn}, code=2)
    assert result.stderr.startswith("Error: RabbitMessageBroker cannot list queues: "
                                    "RabbitMQ lists queues only through its management API")
    assert "guest:guest@" not in result.stderr.replace(MANAGEMENT_URL, "")
    # the example URL is not the DSN's password masked (`guest:***@`), but placeholders
    assert "(e.g. http://USER:PASSWORD@127.0.0.1:15672)" in result.stderr
    assert "***" not in result.stderr


def test_escaped_and_shortened_arguments() -> None:
    from repid.cli._render import shorten

    assert shorten("a\nb\x1b[31m") == "a\\nb\\x1b[31m"
    cut = shorten("x" * 200)
    assert len(cut) == 80 and cut.endswith("...")


# --- Redis ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_send_show_list_requeue_delete_on_redis(redis_dsn: str, queue_name: str) -> None:
    env = cli_env(REPID_BROKER_DSN=redis_dsn, REPID_RESULTS_BUCKET_DSN=redis_dsn)
    runner_env = {"REPID_BROKER_DSN": redis_dsn, "REPID_RESULTS_BUCKET_DSN": redis_dsn}
    try:
        sent = json.loads(python_m_repid("jobs", "send", "work", "--args", '{"n": 1}',
                                         "--queue", queue_name, "--retries", "2", "--json",
                                         env=env).stdout)
        assert sent["queue"] == queue_name and len(sent["result_id"]) == 32
        later = json.loads(cli("jobs", "send", "work", "--queue", queue_name, "--delay",
                               "600", "--json", env=runner_env).stdout)

        listed = json.loads(python_m_repid("queues", "list", "--json", env=env).stdout)
        ours = [q for q in listed if q["queue"] == queue_name]
        assert ours == [{"queue": queue_name, "ready": 1, "delayed": 1, "in_flight": 0,
                         "dead": 0}]

        shown = json.loads(python_m_repid("jobs", "show", sent["message_id"], "--queue",
                                          queue_name, "--json", env=env).stdout)
        assert shown["state"] == "ready" and shown["result"] is None
        assert shown["message"]["retries"] == {"done": 0, "allowed": 2}
        assert shown["message"]["args"] == '{"n":1}'
        assert shown["result_id"] == sent["result_id"]
        # looking gave the ready message back
        assert queue_stats(redis_dsn, queue_name)["ready"] == 1
        text = cli("jobs", "show", sent["message_id"], "--queue", queue_name,
                   env=runner_env).stdout
        assert "state: ready" in text and "result: no result stored (yet)" in text
        delayed = json.loads(cli("jobs", "show", later["message_id"], "--queue", queue_name,
                                 "--json", env=runner_env).stdout)
        assert delayed["state"] == "delayed" and delayed["message"]["ready_at"] is not None
        unknown = json.loads(cli("jobs", "show", "f" * 32, "--queue", queue_name, "--json",
                                 env=runner_env).stdout)
        assert unknown["state"] == "unknown" and unknown["message"] is None

        enqueue(redis_dsn, queue_name, [{"n": 2}])
        asyncio.run(_dead_letter(redis_dsn, queue_name, 2))
        dead = json.loads(python_m_repid("dead", "list", queue_name, "--json",
                                         env=env).stdout)
        assert sorted(d["args"] for d in dead) == ['{"n":1}', '{"n":2}']
        assert {d["reason"] for d in dead} == {"no retries left; last error: ValueError: x"}
        text_lines = cli("dead", "list", queue_name, env=runner_env).stdout.splitlines()
        assert len(text_lines) == 5 and text_lines[-1] == f"2 dead messages in {queue_name}"
        first = next(d for d in dead if d["id"] == sent["message_id"])
        line = next(i for i, t in enumerate(text_lines) if t.startswith(first["id"]))
        assert text_lines[line + 1].startswith(f"    result id: {sent['result_id']}  sent: ")
        assert text_lines[line + 1].endswith('  args: {"n":1}')

        dead_shown = json.loads(cli("jobs", "show", sent["message_id"], "--queue",
                                    queue_name, "--json", env=runner_env).stdout)
        assert dead_shown["state"] == "dead"

        other = next(d["id"] for d in dead if d["id"] != sent["message_id"])
        assert python_m_repid("dead", "requeue", queue_name, "--id", sent["message_id"],
                              env=env).stdout == f"requeued 1 dead message to {queue_name}\n"
        assert queue_stats(redis_dsn, queue_name) == {"ready": 1, "delayed": 1,
                                                      "in_flight": 0, "dead": 1}
        missing = cli("dead", "requeue", queue_name, "--id", sent["message_id"],
                      env=runner_env, code=2)
        assert "no dead message with id" in missing.stderr
        assert cli("dead", "delete", queue_name, "--id", other, env=runner_env).stdout == \
            f"deleted 1 dead message from {queue_name}\n"
        assert queue_stats(redis_dsn, queue_name)["dead"] == 0
    finally:
        delete_queue(redis_dsn, queue_name)


@pytest.mark.integration
def test_jobs_show_finds_a_result_by_result_id_on_redis(redis_dsn: str,
                                                        queue_name: str,
                                                        tmp_path: Path) -> None:
    env = cli_env(REPID_BROKER_DSN=redis_dsn, REPID_RESULTS_BUCKET_DSN=redis_dsn,
                  CLI_TEST_QUEUE=queue_name, CLI_TEST_DIR=str(tmp_path))
    try:
        declare_queue(redis_dsn, queue_name)
        sent = json.loads(python_m_repid("jobs", "send", "work", "--args", '{"n": 7}',
                                         "--queue", queue_name, "--json", env=env).stdout)
        python_m_repid("worker", APP, "--messages-limit", "1", "--log-level", "warning",
                       env=env)
        shown = json.loads(python_m_repid("jobs", "show", sent["result_id"], "--json",
                                          env=env).stdout)
        assert shown["state"] == "succeeded" and shown["result"]["data"] == 7
        assert shown["result_id"] == sent["result_id"] and shown["message"] is None
    finally:
        delete_queue(redis_dsn, queue_name)


@pytest.mark.integration
def test_worker_consumes_only_the_queues_given_and_stops_at_its_limit(
        redis_dsn: str, queue_name: str, tmp_path: Path) -> None:
    env = cli_env(REPID_BROKER_DSN=redis_dsn, CLI_TEST_QUEUE=queue_name,
                  CLI_TEST_DIR=str(tmp_path))
    try:
        declare_queue(redis_dsn, queue_name)
        enqueue(redis_dsn, queue_name, [{"n": n} for n in range(3)])
        python_m_repid("worker", APP, "--queues", queue_name, "--messages-limit", "2",
                       env=env)
        assert len(lines(tmp_path / "done")) == 2
        assert queue_stats(redis_dsn, queue_name)["ready"] == 1
    finally:
        delete_queue(redis_dsn, queue_name)


@pytest.mark.integration
def test_supervisor_replaces_a_process_that_reached_its_limit(
        redis_dsn: str, queue_name: str, tmp_path: Path) -> None:
    env = cli_env(REPID_BROKER_DSN=redis_dsn, CLI_TEST_QUEUE=queue_name,
                  CLI_TEST_DIR=str(tmp_path))
    try:
        declare_queue(redis_dsn, queue_name)
        enqueue(redis_dsn, queue_name, [{"n": n} for n in range(4)])
        args = ["worker", APP, "--processes", "2", "--messages-limit", "1"]
        with running(args, env, tmp_path / "log") as process:
            done = wait_for(lambda: lines(tmp_path / "done")
                            if len(lines(tmp_path / "done")) == 4 else None,
                            timeout=45, what="4 jobs done")
            # one job per process: two processes, each replaced after its job (a process
            # may end before it ran its job, so at least three, not four)
            assert len({line.split()[1] for line in done}) >= 3
            os.kill(process.pid, signal.SIGTERM)
            assert process.wait(30) == 0
        log = (tmp_path / "log").read_text()
        assert log.count("reached its --messages-limit; starting a new one") >= 2
        assert "died" not in log and "cannot start" not in log
    finally:
        delete_queue(redis_dsn, queue_name)


# --- RabbitMQ -------------------------------------------------------------------------------


def _management_or_skip() -> None:
    try:
        socket.create_connection(("127.0.0.1", 15672), timeout=1).close()
    except OSError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("RabbitMQ's management API is not reachable at 127.0.0.1:15672")
        pytest.skip("RabbitMQ's management API is not reachable at 127.0.0.1:15672")


@pytest.mark.integration
def test_commands_on_rabbitmq(amqp_dsn: str, queue_name: str) -> None:
    _management_or_skip()
    env = cli_env(REPID_BROKER_DSN=amqp_dsn, REPID_RABBITMQ_MANAGEMENT_URL=MANAGEMENT_URL)
    runner_env = {"REPID_BROKER_DSN": amqp_dsn}
    try:
        declare_queue(amqp_dsn, queue_name)
        sent = json.loads(python_m_repid("jobs", "send", "work", "--args", '{"n": 1}',
                                         "--queue", queue_name, "--json", env=env).stdout)
        enqueue(amqp_dsn, queue_name, [{"n": 2}])
        listed = json.loads(python_m_repid("queues", "list", "--json", env=env).stdout)
        names = [q["queue"] for q in listed]
        assert queue_name in names and f"{queue_name}:dead" not in names
        assert not any(name.startswith("repid.") for name in names)
        assert next(q for q in listed if q["queue"] == queue_name)["ready"] == 2

        shown = json.loads(python_m_repid("jobs", "show", sent["message_id"], "--queue",
                                          queue_name, "--json", env=env).stdout)
        assert shown["state"] == "ready" and shown["message"]["args"] == '{"n":1}'
        assert queue_stats(amqp_dsn, queue_name)["ready"] == 2

        asyncio.run(_dead_letter(amqp_dsn, queue_name, 2))
        dead = json.loads(cli("dead", "list", queue_name, "--json", env=runner_env).stdout)
        assert {d["id"] for d in dead} >= {sent["message_id"]} and len(dead) == 2
        other = next(d["id"] for d in dead if d["id"] != sent["message_id"])
        assert python_m_repid("dead", "requeue", queue_name, "--id", sent["message_id"],
                              env=env).stdout == f"requeued 1 dead message to {queue_name}\n"
        assert cli("dead", "delete", queue_name, "--id", other, env=runner_env).stdout == \
            f"deleted 1 dead message from {queue_name}\n"
        counts = queue_stats(amqp_dsn, queue_name)
        assert (counts["ready"], counts["dead"]) == (1, 0)
    finally:
        delete_queue(amqp_dsn, queue_name)
