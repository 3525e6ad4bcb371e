"""One-line errors with exit code 2: bad import paths, bad DSNs, unreachable brokers; a DSN's
password never shows."""

from __future__ import annotations

import socket
import subprocess
from urllib.parse import urlsplit

import pytest
from cli_helpers import APP, ROOT, cli_env, free_port, repid_command
from click.testing import CliRunner, Result

from repid.cli import main
from repid.cli._loading import connection_from_env

SECRET = "s3cr3t-pa55"


def invoke(*args: str, **env: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def one_line_error(result: Result) -> str:
    """The error line; checks exit code 2, a single stderr line, no secret anywhere."""
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert SECRET not in result.output + result.stderr
    return lines[0]


@pytest.mark.parametrize(("target", "expected"), [
    ("tests.cli.cli_app", "is not an import path: use MODULE:ATTRIBUTE"),
    ("no_such_module_xyz:worker", "no module named 'no_such_module_xyz'"),
    ("tests.cli.no_such_module:worker", "no module named 'tests.cli.no_such_module'"),
    ("tests/cli/missing.py:worker", "no such file 'tests/cli/missing.py'"),
    ("tests.cli.cli_app:nope", "module 'tests.cli.cli_app' has no attribute 'nope'"),
    ("tests/cli/cli_app.py:not_a_worker", "is a int, not a repid Worker or Router"),
    ("tests.cli.cli_app:empty_router", "has no actors: register some with @router.actor"),
])
def test_bad_import_path(target: str, expected: str) -> None:
    line = one_line_error(invoke("worker", target, REPID_BROKER_DSN="memory://"))
    assert expected in line


def test_app_of_the_wrong_type() -> None:
    line = one_line_error(invoke("worker", APP, "--app", "tests.cli.cli_app:router"))
    assert "is a Router, not a repid Repid or Connection" in line


def test_no_connection_configured() -> None:
    line = one_line_error(invoke("queues", "stats", "default"))
    assert "no connection: pass --app" in line and "REPID_BROKER_DSN" in line


@pytest.mark.parametrize(("dsn", "expected"), [
    (f"redis://user:{SECRET}@127.0.0.1:notaport/0", "REPID_BROKER_DSN is malformed"),
    (f"127.0.0.1:{SECRET}", "REPID_BROKER_DSN is malformed"),
    (f"redis://user:{SECRET}@/0", "names no host"),
    (f"http://user:{SECRET}@127.0.0.1/", "unsupported scheme 'http'"),
])
def test_malformed_dsn(dsn: str, expected: str) -> None:
    line = one_line_error(invoke("queues", "stats", "default", REPID_BROKER_DSN=dsn))
    assert expected in line


def test_bucket_dsn_of_a_message_broker_is_refused() -> None:
    line = one_line_error(invoke("queues", "stats", "default", REPID_BROKER_DSN="memory://",
                                 REPID_RESULTS_BUCKET_DSN=f"amqp://u:{SECRET}@127.0.0.1/"))
    assert "REPID_RESULTS_BUCKET_DSN has an unsupported scheme 'amqp'" in line
    assert "amqp://u:***@127.0.0.1/" in line


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_unreachable_broker(scheme: str) -> None:
    dsn = f"{scheme}://user:{SECRET}@127.0.0.1:{free_port()}/"
    line = one_line_error(invoke("queues", "stats", "default", REPID_BROKER_DSN=dsn))
    assert "127.0.0.1" in line and "user:***@" in line


def test_a_redis_dsn_at_another_port_says_what_to_check(amqp_dsn: str) -> None:
    """Nothing listening, or another server there (RabbitMQ's port resets the
    connection): either way the error names the address and asks to check it."""
    rabbit_port = urlsplit(amqp_dsn).port or 5672
    for port in (free_port(), rabbit_port):
        dsn = f"redis://:{SECRET}@127.0.0.1:{port}/0"
        line = one_line_error(invoke("queues", "stats", "default", REPID_BROKER_DSN=dsn))
        assert line.startswith(f"Error: cannot reach Redis at redis://:***@127.0.0.1:{port}/0")
        assert line.endswith("; check that Redis listens at that host and port (6379 unless "
                             "the server was set otherwise)"), line
        assert ".;" not in line and SECRET not in line


def test_worker_with_unreachable_broker_exits_2_before_starting_processes() -> None:
    env = cli_env(REPID_BROKER_DSN=f"redis://:{SECRET}@127.0.0.1:{free_port()}/0")
    done = subprocess.run([*repid_command(), "worker", APP, "-p", "2"], cwd=ROOT, env=env,
                          capture_output=True, timeout=40, check=False)
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert stderr.strip().splitlines()[-1].startswith("Error: cannot reach Redis at redis://:***@")
    assert SECRET not in stderr and "started worker process" not in stderr


def test_env_connection_has_the_brokers_the_dsns_name() -> None:
    connection = connection_from_env({"REPID_BROKER_DSN": "memory://",
                                      "REPID_ARGS_BUCKET_DSN": "memory://",
                                      "REPID_RESULTS_BUCKET_DSN": "memory://"})
    assert connection.args_bucket_broker is not None
    assert connection.results_bucket_broker is not None
    assert connection.results_bucket_broker.use_result_bucket
    assert not connection.args_bucket_broker.use_result_bucket


def test_unreachable_rabbitmq_is_one_line_from_the_real_command() -> None:
    env = cli_env(REPID_BROKER_DSN=f"amqp://guest:{SECRET}@127.0.0.1:{free_port()}/")
    done = subprocess.run([*repid_command(), "queues", "stats", "default"], cwd=ROOT, env=env,
                          capture_output=True, timeout=40, check=False)
    stderr = done.stderr.decode()
    assert done.returncode == 2
    assert stderr.count("\n") == 1 and stderr.startswith("Error: cannot connect to RabbitMQ at "
                                                         "amqp://guest:***@127.0.0.1:")
    assert SECRET not in stderr


@pytest.mark.parametrize("processes", ["1", "2"])
def test_health_port_in_use(processes: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line_error(invoke("worker", APP, "-p", processes, "--health-port", str(port),
                                     "--bind", "127.0.0.1", REPID_BROKER_DSN="memory://"))
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in line
