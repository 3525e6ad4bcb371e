"""One worker process: run a Worker with the command line's settings until it stops.

This is what `repid worker` runs without `--processes`, and what each supervised worker
process runs. It owns SIGTERM/SIGINT for the whole run (the first stops gracefully, the
second returns running jobs to their queues at once), serves the health and metrics ports
(unless supervised; `/healthz` is 503 with the reason while the worker cannot take
messages), and, supervised, reports to the supervisor when it is ready and then every
second whether it can take messages.
"""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import FrameType

from repid.app import Repid
from repid.cli._loading import (
    CliError,
    connect,
    describe,
    load_connection,
    load_worker,
    register_plugins,
)
from repid.cli._supervisor import HEARTBEAT_SECONDS, READY_FD_ENV, SUPERVISOR_PID_ENV, report_line
from repid.connection import Connection
from repid.middleware import hookimpl
from repid.worker import Worker
from repid.worker._health import HttpServer
from repid.worker._health import Route as HealthRoute
from repid.worker._signals import STOP_SIGNALS, StopSignals, install

logger = logging.getLogger("repid.cli")

LISTEN_ERRORS = (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL)


@dataclass
class WorkerOptions:
    """The command line of `repid worker`."""

    target: str
    app: str | None
    processes: int
    concurrency: int | None
    health_port: int | None
    metrics_port: int | None
    bind: str | None
    graceful_shutdown_time: float | None
    pidfile: str | None
    reload: bool
    log_level: str
    plugins: tuple[str, ...] = ()
    unhealthy_after: float | None = None
    #: only the actors of these queues (`--queues`); empty: all
    queues: tuple[str, ...] = ()
    #: stop after this many messages (`--messages-limit`; per process with `--processes`)
    messages_limit: int | None = None

    def child_command(self) -> list[str]:
        """The command line of one supervised worker process."""
        command = [sys.executable, "-m", "repid.cli", "worker", self.target,
                   "--log-level", self.log_level]
        if self.app is not None:
            command += ["--app", self.app]
        if self.concurrency is not None:
            command += ["--concurrency", str(self.concurrency)]
        if self.graceful_shutdown_time is not None:
            command += ["--graceful-shutdown-time", str(self.graceful_shutdown_time)]
        for plugin in self.plugins:
            command += ["--plugin", plugin]
        if self.metrics_port is not None:
            command += ["--metrics-port", str(self.metrics_port)]
        if self.unhealthy_after is not None:
            command += ["--unhealthy-after", str(self.unhealthy_after)]
        if self.queues:
            command += ["--queues", ",".join(self.queues)]
        if self.messages_limit is not None:
            command += ["--messages-limit", str(self.messages_limit)]
        return command


@contextmanager
def pidfile(path: str | None) -> Iterator[None]:
    """Write this process's pid to `path` while the block runs."""
    if path is None:
        yield
        return
    try:
        with open(path, "w") as file:
            file.write(f"{os.getpid()}\n")
    except OSError as exc:
        raise CliError(f"cannot write the pidfile {path!r}: {exc.strerror}") from None
    try:
        yield
    finally:
        try:
            os.unlink(path)
        except OSError:
            logger.debug("pidfile %s already gone", path)


def configure_worker(worker: Worker, connection: Connection, options: WorkerOptions) -> None:
    """Apply the command line's settings to the worker."""
    worker.connection = connection
    if options.concurrency is not None:
        worker.tasks_limit = options.concurrency
    if options.graceful_shutdown_time is not None:
        worker.graceful_shutdown_time = options.graceful_shutdown_time
    if options.messages_limit is not None:
        worker.messages_limit = options.messages_limit
    settings = worker.health_check_server_settings
    if options.health_port is not None:
        worker.run_health_check_server = True
        worker.health_check_server_settings = replace(
            settings, address=options.bind or settings.address, port=options.health_port)
    elif options.bind is not None:
        worker.health_check_server_settings = replace(settings, address=options.bind)
    if options.unhealthy_after is not None:
        worker.health_check_server_settings = replace(worker.health_check_server_settings,
                                                      unhealthy_after=options.unhealthy_after)
    if os.environ.get(READY_FD_ENV):
        # the supervisor serves /healthz for every process: N children cannot share a port
        worker.run_health_check_server = False


class Reporter:
    """Plugin of a supervised worker process: tells the supervisor it is ready, then every
    `HEARTBEAT_SECONDS` whether it can take messages (`report_line`).

    Writes never block the event loop: a full pipe (a supervisor not reading) loses the
    line, and the next heartbeat says it again."""

    def __init__(self, fd: int, worker: Worker) -> None:
        self.fd = fd
        self.worker = worker
        self.ready = False
        os.set_blocking(fd, False)

    def report(self) -> None:
        """Write this process's state to the supervisor's pipe."""
        after = self.worker.health_check_server_settings.unhealthy_after
        line = report_line(os.getpid(), self.worker.health_problem(after=after))
        try:
            os.write(self.fd, line)
        except BlockingIOError:
            logger.debug("the supervisor's pipe is full; report skipped")

    @hookimpl
    def repid_worker_start(self, worker: Worker) -> None:
        """The first report: this process is ready."""
        self.ready = True
        self.report()

    async def heartbeat(self) -> None:
        """Report every `HEARTBEAT_SECONDS` once ready, until cancelled."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            if self.ready and self.worker.runner is not None:
                self.report()


class Stopper:
    """SIGTERM/SIGINT handling for the whole life of a worker process, as a plugin.

    The CLI takes signals over from the Runner (`handle_signals=[]`), so that a signal
    arriving while connecting, or after the worker stopped, still means "stop gracefully"
    and never kills the process half-way. A second signal while stopping returns the
    running jobs to their queues at once (`Runner.hurry`).

    A supervised process (`supervised=True`) ignores SIGINT: Ctrl-C in a terminal reaches
    every process of the group, and the supervisor forwards it as SIGTERM; counting both
    would make one Ctrl-C a second signal.
    """

    def __init__(self, worker: Worker, supervised: bool = False) -> None:
        self.worker = worker
        self.supervised = supervised
        self.loop: asyncio.AbstractEventLoop | None = None
        self.requested = False
        self.signals = StopSignals(self._stop, self._hurry)

    def install(self) -> None:
        """Handle SIGTERM (and SIGINT, unless supervised) from now on."""
        self.worker.handle_signals = []
        if self.supervised:
            signal.signal(signal.SIGINT, self._on_interrupt)
        install([signal.SIGTERM] if self.supervised else STOP_SIGNALS, self._on_signal)

    def _on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        """SIGINT in a supervised process: left to the supervisor."""
        logger.debug("SIGINT ignored: the supervisor forwards it as SIGTERM")

    def _on_signal(self, signum: int) -> None:
        """In the signal handler: hand the signal over to the event loop, if it runs."""
        loop = self.loop
        if loop is None or loop.is_closed():
            self.requested = True  # the worker stops as soon as it starts
            return
        loop.call_soon_threadsafe(self.signals, signum)

    def _stop(self, name: str) -> None:
        """First signal: ask the worker to stop (at start, if it was not running yet)."""
        if not self.requested:
            logger.info("received %s: stopping; running jobs get %.1f s to finish (send it "
                        "again to return them at once)", name,
                        self.worker.graceful_shutdown_time)
        self.requested = True
        self.worker.stop()

    def _hurry(self, name: str) -> None:
        """Second signal: return the running jobs to their queues at once."""
        runner = self.worker.runner
        if runner is None:
            return  # still starting: it stops at start
        if self.signals.received == 2:
            logger.warning("received %s again: returning running jobs to their queues now",
                           name)
        runner.hurry()

    @hookimpl
    def repid_worker_start(self, worker: Worker) -> None:
        """Stop at once if a signal came while the worker was starting."""
        if self.requested:
            worker.stop()


async def watch_supervisor(worker: Worker, supervisor_pid: int) -> None:
    """Stop the worker gracefully if the supervisor dies (this process is re-parented)."""
    if supervisor_pid <= 0:
        return
    while True:
        await asyncio.sleep(1)
        if os.getppid() != supervisor_pid and worker.runner is not None:
            logger.warning("the supervisor (pid %d) is gone; stopping", supervisor_pid)
            worker.stop()
            return


def metrics_route(worker: Worker, connection: Connection) -> HealthRoute | None:
    """The `/metrics` route a plugin (the Prometheus MetricsPlugin) contributes, if any."""
    routes: dict[str, HealthRoute] = {}
    for extra in connection.middleware.collect("repid_http_routes", worker=worker):
        routes.update(extra)
    return routes.get("/metrics")


def ensure_metrics_plugin(worker: Worker, connection: Connection) -> None:
    """With `--metrics-port` and no plugin serving /metrics, register the MetricsPlugin."""
    if metrics_route(worker, connection) is not None:
        return
    if importlib.util.find_spec("prometheus_client") is None:
        raise CliError("--metrics-port needs prometheus-client: pip install 'repid[prometheus]'")
    from repid_plugins.prometheus import MetricsPlugin

    connection.middleware.register(MetricsPlugin())
    logger.info("--metrics-port: registered repid_plugins.prometheus.MetricsPlugin")


async def _listen(server: HttpServer) -> None:
    """Start a server, or fail with a one-line error naming its address."""
    try:
        await server.start()
    except OSError as exc:
        raise CliError(f"cannot listen on {server.address}:{server.requested_port}: "
                       f"{os.strerror(exc.errno) if exc.errno else exc}") from None


async def serve(worker: Worker, connection: Connection, options: WorkerOptions,
                stopper: Stopper) -> int:
    """Connect, run the worker until it stops, disconnect; the number of messages handled."""
    stopper.loop = asyncio.get_running_loop()
    connection.middleware.register(stopper)
    await connect(connection)
    app = Repid(connection)
    await app.magic_connect()
    extra: HttpServer | None = None
    watcher: asyncio.Task[None] | None = None
    heartbeat: asyncio.Task[None] | None = None
    try:
        # read once, and not passed on to processes the actors may start
        ready_fd = os.environ.pop(READY_FD_ENV, None)
        supervisor_pid = int(os.environ.pop(SUPERVISOR_PID_ENV, "0"))
        route = metrics_route(worker, connection)
        shared = (worker.run_health_check_server
                  and options.metrics_port == worker.health_check_server_settings.port)
        if options.metrics_port is not None and route is not None and not shared \
                and not ready_fd:
            extra = HttpServer(options.bind or worker.health_check_server_settings.address,
                               options.metrics_port, {"/metrics": route})
            await _listen(extra)
        if ready_fd:
            reporter = Reporter(int(ready_fd), worker)
            connection.middleware.register(reporter)
            watcher = asyncio.create_task(watch_supervisor(worker, supervisor_pid))
            heartbeat = asyncio.create_task(reporter.heartbeat())
        logger.info("worker %s: queues %s, actors %s, %d jobs at a time; broker %s",
                    options.target, ", ".join(worker.topics_by_queue),
                    ", ".join(worker.actors), worker.tasks_limit, describe(connection))
        try:
            runner = await worker.run()
        except OSError as exc:
            if exc.errno not in LISTEN_ERRORS:
                raise
            settings = worker.health_check_server_settings
            raise CliError(f"cannot listen on {settings.address}:{settings.port}: "
                           f"{os.strerror(exc.errno) if exc.errno else exc}") from None
        return runner.processed
    finally:
        for task in (watcher, heartbeat):
            if task is not None:
                task.cancel()
        if extra is not None:
            await extra.stop()
        await app.magic_disconnect()


def run_in_process(options: WorkerOptions) -> int:
    """Run one worker in this process; the exit code."""
    worker = load_worker(options.target, options.queues)
    connection = load_connection(options.app, worker)
    configure_worker(worker, connection, options)
    register_plugins(connection, options.plugins)
    if options.metrics_port is not None:
        ensure_metrics_plugin(worker, connection)
    stopper = Stopper(worker, supervised=bool(os.environ.get(READY_FD_ENV)))
    stopper.install()
    with pidfile(options.pidfile):
        asyncio.run(serve(worker, connection, options, stopper))
    return 0
