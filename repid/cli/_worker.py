"""`repid worker MODULE:ATTR`: run a Worker (or a Router's actors) in this process, or in N
supervised processes with `--processes N` / `--reload`."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import sys
import tempfile

import click

from repid.brokers.in_memory import InMemoryMessageBroker
from repid.cli._loading import (
    CliError,
    connect,
    load_connection,
    load_worker,
    parse_queues,
    register_plugins,
)
from repid.cli._logs import configure_logging
from repid.cli._process import WorkerOptions, pidfile, run_in_process
from repid.cli._session import APP_ENV
from repid.cli._supervisor import Supervisor, SupervisorSettings
from repid.connection import Connection

logger = logging.getLogger("repid.cli")

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

def prepare_metrics_dir() -> tuple[str, str | None]:
    """Set up prometheus_client multiprocess mode before anything imports it.

    The directory is $PROMETHEUS_MULTIPROC_DIR (wiped), else a new temporary one; returns
    it and, for a temporary one, the path to remove at exit.
    """
    if importlib.util.find_spec("prometheus_client") is None:
        raise CliError("--metrics-port needs prometheus-client: pip install 'repid[prometheus]'")
    from repid_plugins.prometheus import MULTIPROC_ENV, setup_multiprocess

    given = os.environ.get(MULTIPROC_ENV)
    created = None if given else tempfile.mkdtemp(prefix="repid-metrics-")
    try:
        path = setup_multiprocess(given or created)
    except (OSError, RuntimeError, ValueError) as exc:
        raise CliError(f"cannot prepare the metrics directory: {exc}") from None
    return str(path), created


async def preflight(connection: Connection) -> None:
    """Check that the brokers answer before starting any process."""
    await connect(connection)
    await connection.disconnect()


def supervise(options: WorkerOptions) -> int:
    """Run `--processes N` worker processes under a supervisor; the exit code."""
    metrics_dir, created = (prepare_metrics_dir() if options.metrics_port is not None
                            else (None, None))
    try:
        worker = load_worker(options.target, options.queues)
        connection = load_connection(options.app, worker)
        register_plugins(connection, options.plugins)
        if isinstance(connection.message_broker, InMemoryMessageBroker) \
                and options.processes > 1:
            logger.warning("memory:// keeps messages inside each process: the %d worker "
                           "processes share nothing", options.processes)
        asyncio.run(preflight(connection))
        own = worker.health_check_server_settings
        address = options.bind or own.address
        health = None
        if options.health_port is not None:
            health = (address, options.health_port, own.endpoint_name)
        elif worker.run_health_check_server:
            health = (address, own.port, own.endpoint_name)
        supervisor = Supervisor(SupervisorSettings(
            command=options.child_command(),
            processes=options.processes,
            grace=(worker.graceful_shutdown_time if options.graceful_shutdown_time is None
                   else options.graceful_shutdown_time),
            health=health,
            metrics=None if options.metrics_port is None else (address, options.metrics_port),
            metrics_dir=metrics_dir,
            reload=options.reload,
            replace_finished=options.messages_limit is not None,
            unhealthy_after=(own.unhealthy_after if options.unhealthy_after is None
                             else options.unhealthy_after),
        ))
        try:
            supervisor.start_http()
        except OSError as exc:
            raise CliError(f"cannot listen on {exc.filename}: {exc.strerror}") from None
        with pidfile(options.pidfile):
            return supervisor.run()
    finally:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)


@click.command("worker")
@click.argument("target", metavar="MODULE:ATTR")
@click.option("--app", metavar="MODULE:ATTR", envvar=APP_ENV,
              help=f"A Repid or Connection to use [default: ${APP_ENV}, else the Worker's "
                   "own, else the REPID_*_DSN environment variables].")
@click.option("-p", "--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes to run under a supervisor.")
@click.option("-c", "--concurrency", type=click.IntRange(min=1),
              help="Jobs each process runs at once (the Worker's tasks_limit).")
@click.option("--health-port", type=click.IntRange(0, 65535),
              help="Serve GET /healthz on this port (from the supervisor with -p N).")
@click.option("--unhealthy-after", type=click.FloatRange(min=0), metavar="SECONDS",
              help="/healthz answers 503 once the worker could not take messages for this "
                   "long [default: the Worker's health_check_server_settings, 30].")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Serve GET /metrics on this port (summed over processes with -p N); "
                   "registers the Prometheus MetricsPlugin unless a plugin serves /metrics.")
@click.option("--bind", metavar="ADDRESS",
              help="Address of the health and metrics ports [default: the Worker's "
                   "health_check_server_settings.address, 0.0.0.0].")
@click.option("--graceful-shutdown-time", type=click.FloatRange(min=0),
              help="Seconds running jobs get after SIGTERM/SIGINT [default: the Worker's].")
@click.option("--pidfile", type=click.Path(dir_okay=False),
              help="Write the pid of this process (the supervisor with -p N) here.")
@click.option("--plugin", "plugins", metavar="MODULE:ATTR", multiple=True,
              help="Register this plugin (an object, or a class to call) on the "
                   "connection; repeatable.")
@click.option("--reload", is_flag=True,
              help="Development: restart the workers when a .py file under the current "
                   "directory changes.")
@click.option("--queues", "queues_text", metavar="A,B",
              help="Only consume these queues (of the actors' queues).")
@click.option("--messages-limit", type=click.IntRange(min=1), metavar="N",
              help="Stop after N messages; with --processes, each process does and is "
                   "replaced by a new one.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False),
              default="info", show_default=True)
def worker_command(target: str, app: str | None, processes: int, concurrency: int | None,
                   health_port: int | None, unhealthy_after: float | None,
                   metrics_port: int | None, bind: str | None,
                   graceful_shutdown_time: float | None, pidfile: str | None,
                   plugins: tuple[str, ...], reload: bool, queues_text: str | None,
                   messages_limit: int | None, log_level: str) -> None:
    """Run the worker that MODULE:ATTR names (a Worker, or a Router).

    MODULE is a dotted module name (importable from the current directory) or a path to
    a .py file. SIGTERM or SIGINT stops taking messages and lets running jobs finish; a
    second one returns the running jobs to their queues at once.
    """
    options = WorkerOptions(target, app, processes, concurrency, health_port, metrics_port,
                            bind, graceful_shutdown_time, pidfile, reload, log_level.lower(),
                            plugins, unhealthy_after, parse_queues(queues_text),
                            messages_limit)
    configure_logging(options.log_level)
    supervised = processes > 1 or reload
    code = supervise(options) if supervised else run_in_process(options)
    sys.exit(code)
