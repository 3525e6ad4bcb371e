"""The supervisor behind `repid worker --processes N` and `--reload`.

It starts N worker processes (each one `python -m repid.cli worker ...`), restarts one that
dies, forwards SIGTERM/SIGINT so they shut down gracefully, and serves `/healthz` and
`/metrics` for all of them. A worker process reports that it is ready (connected, queues
declared, consuming) by writing its pid to a pipe the supervisor reads.

```mermaid
stateDiagram-v2
    [*] --> starting: spawn N
    starting --> running: every process ready
    running --> starting: a process died, spawn a new one
    starting --> failed: N processes died before they were ready
    running --> stopping: SIGTERM / SIGINT (forwarded)
    running --> reloading: a .py file changed (--reload)
    reloading --> starting: old processes gone
    stopping --> [*]: all exited (killed after the grace time)
    failed --> [*]: exit code non-zero
```
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from repid.cli.http import HttpServer, Route
from repid.cli.reload import changed_file, snapshot

logger = logging.getLogger("repid.cli.supervisor")

READY_FD_ENV = "_REPID_READY_FD"
SUPERVISOR_PID_ENV = "_REPID_SUPERVISOR_PID"
INDEX_ENV = "REPID_WORKER_INDEX"

POLL_SECONDS = 0.2
RELOAD_POLL_SECONDS = 1.0
KILL_MARGIN_SECONDS = 5.0


@dataclass
class SupervisorSettings:
    """What the supervisor runs and serves."""

    command: list[str]
    processes: int
    grace: float
    health: tuple[str, int, str] | None = None  # address, port, path
    metrics: tuple[str, int] | None = None  # address, port
    metrics_dir: str | None = None
    reload: bool = False
    reload_root: str = field(default_factory=os.getcwd)


@dataclass
class Child:
    """One worker process."""

    index: int
    process: subprocess.Popen[bytes]
    ready: bool = False

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid


def describe_exit(code: int) -> str:
    """`exit code 3` or `killed by SIGKILL`."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """Runs and watches the worker processes; `run()` returns the exit code."""

    def __init__(self, settings: SupervisorSettings) -> None:
        self.settings = settings
        self.children: dict[int, Child] = {}
        self.stopping = False
        self.exit_code = 0
        self._reloading = False
        self._waiting_for_change = False
        self._failed_starts = 0
        self._kill_at: float | None = None
        self._signals: list[int] = []
        self._ready_r, self._ready_w = os.pipe()
        self._buffer = b""
        self._servers: list[HttpServer] = []

    # --- HTTP -----------------------------------------------------------------------------

    def health(self) -> tuple[int, str, bytes]:
        """`/healthz`: 200 when every worker process is ready, else 503; JSON with the pids."""
        children = sorted(list(self.children.values()), key=lambda c: c.index)
        ready = sum(child.ready for child in children)
        ok = ready == self.settings.processes and not self.stopping and not self._reloading
        status = "ok" if ok else "stopping" if self.stopping else "starting"
        body = {"status": status, "ready": ready, "processes": self.settings.processes,
                "workers": [{"index": c.index, "pid": c.pid, "ready": c.ready}
                            for c in children]}
        return (200 if ok else 503, "application/json",
                json.dumps(body).encode() + b"\n")

    def metrics(self) -> tuple[int, str, bytes]:
        """`/metrics`: the sum of every worker process's metrics (multiprocess mode)."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.settings.metrics_dir)  # type: ignore[no-untyped-call]
        return 200, CONTENT_TYPE_LATEST, generate_latest(registry)

    def start_http(self) -> None:
        """Listen for `/healthz` and `/metrics` (one server when they share a port); an
        OSError names the address that failed as its `filename`."""
        by_port: dict[tuple[str, int], dict[str, Route]] = {}
        if self.settings.health is not None:
            address, port, path = self.settings.health
            by_port.setdefault((address, port), {})[path] = self.health
        if self.settings.metrics is not None:
            by_port.setdefault(self.settings.metrics, {})["/metrics"] = self.metrics
        for (address, port), routes in by_port.items():
            try:
                server = HttpServer(address, port, routes)
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, f"{address}:{port}") from None
            server.start()
            self._servers.append(server)
            logger.info("serving %s on http://%s:%d", ", ".join(sorted(routes)), address,
                        server.port)

    # --- processes ------------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        """Start worker process `index`."""
        env = dict(os.environ)
        env.update({READY_FD_ENV: str(self._ready_w), INDEX_ENV: str(index),
                     SUPERVISOR_PID_ENV: str(os.getpid())})
        process = subprocess.Popen(self.settings.command, env=env, pass_fds=(self._ready_w,))
        self.children[index] = Child(index, process)
        logger.info("started worker process %d (pid %d)", index, process.pid)

    def _spawn_all(self) -> None:
        """Start every worker process that is not running."""
        for index in range(self.settings.processes):
            if index not in self.children:
                self._spawn(index)

    def _send(self, sig: int) -> None:
        """Send `sig` to every worker process."""
        for child in list(self.children.values()):
            try:
                os.kill(child.pid, sig)
            except ProcessLookupError:
                continue

    def _read_ready(self, timeout: float) -> None:
        """Wait up to `timeout` for readiness reports; mark those processes ready."""
        readable, _, _ = select.select([self._ready_r], [], [], timeout)
        if not readable:
            return
        self._buffer += os.read(self._ready_r, 4096)
        *lines, self._buffer = self._buffer.split(b"\n")
        by_pid = {child.pid: child for child in self.children.values()}
        for line in lines:
            child = by_pid.get(int(line)) if line.strip().isdigit() else None
            if child is not None and not child.ready:
                child.ready = True
                self._failed_starts = 0
                logger.info("worker process %d (pid %d) is ready", child.index, child.pid)

    def _reap(self) -> None:
        """Collect the worker processes that exited and handle each."""
        for child in list(self.children.values()):
            code = child.process.poll()
            if code is None:
                continue
            del self.children[child.index]
            if self.settings.metrics_dir is not None:
                from repid_plugins.prometheus import mark_process_dead

                mark_process_dead(child.pid, self.settings.metrics_dir)
            self._exited(child, code)

    def _exited(self, child: Child, code: int) -> None:
        """Log an exit; replace the process unless stopping, finished, or failing to start."""
        how = describe_exit(code)
        if self.stopping or self._reloading:
            logger.info("worker process %d (pid %d) exited (%s)", child.index, child.pid, how)
            if code != 0 and self.stopping:
                self.exit_code = self.exit_code or 1
            return
        if code == 0:
            logger.info("worker process %d (pid %d) finished (exit code 0); not restarting",
                        child.index, child.pid)
            return
        if not child.ready:
            self._failed_starts += 1
            if self._failed_starts >= self.settings.processes:
                self._cannot_start(code)
                return
        if self._waiting_for_change:
            return
        logger.warning("worker process %d (pid %d) died (%s); starting a new one",
                       child.index, child.pid, how)
        self._spawn(child.index)

    def _cannot_start(self, code: int) -> None:
        """Give up (or, with --reload, wait for a change): the processes cannot start."""
        how = describe_exit(code)
        if self.settings.reload:
            logger.error("worker processes cannot start (last: %s); waiting for a change "
                         "to try again", how)
            self._waiting_for_change = True
            return
        logger.error("worker processes cannot start: %d exited before they were ready "
                     "(last: %s); giving up", self._failed_starts, how)
        self.exit_code = code if code > 0 else 1
        self._begin_stop(signal.SIGTERM)

    # --- stopping and reloading -------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler: note the signal for the loop."""
        self._signals.append(signum)

    def _handle_signals(self) -> None:
        """First signal: stop gracefully; another one: kill."""
        while self._signals:
            signum = self._signals.pop(0)
            name = signal.Signals(signum).name
            if not self.stopping:
                logger.info("received %s: stopping %d worker processes (%.1f s to finish "
                            "their jobs)", name, len(self.children), self.settings.grace)
                self._begin_stop(signum)
            else:
                logger.warning("received %s again: killing the worker processes", name)
                self._kill_all()

    def _begin_stop(self, signum: int) -> None:
        """Forward `signum` to every worker process and start the kill deadline."""
        self.stopping = True
        self._send(signum)
        self._kill_at = time.monotonic() + self.settings.grace + KILL_MARGIN_SECONDS

    def _kill_all(self) -> None:
        """SIGKILL every worker process."""
        if self.children:
            logger.warning("killing %d worker processes", len(self.children))
        self._send(signal.SIGKILL)
        self._kill_at = None

    def _begin_reload(self, path: str) -> None:
        """Stop the worker processes gracefully; new ones start when they are gone."""
        logger.info("%s changed; restarting the worker processes", path)
        self._waiting_for_change = False
        self._failed_starts = 0
        self._reloading = True
        self._send(signal.SIGTERM)
        self._kill_at = time.monotonic() + self.settings.grace + KILL_MARGIN_SECONDS

    # --- the loop ---------------------------------------------------------------------------

    def _install_signals(self) -> Callable[[], None]:
        """Handle SIGINT and SIGTERM; returns a function restoring the old handlers."""
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def run(self) -> int:
        """Start the processes and watch them until they are stopped; the exit code."""
        restore = self._install_signals()
        files = snapshot(self.settings.reload_root) if self.settings.reload else {}
        next_scan = time.monotonic() + RELOAD_POLL_SECONDS
        try:
            self._spawn_all()
            while True:
                self._read_ready(POLL_SECONDS)
                self._handle_signals()
                self._reap()
                now = time.monotonic()
                if self._kill_at is not None and now >= self._kill_at:
                    self._kill_all()
                    if self.stopping:
                        self.exit_code = self.exit_code or 1
                if self.stopping:
                    if not self.children:
                        break
                    continue
                if self._reloading:
                    if not self.children:
                        self._reloading = False
                        self._kill_at = None
                        self._spawn_all()
                    continue
                if self.settings.reload and now >= next_scan:
                    next_scan = now + RELOAD_POLL_SECONDS
                    current = snapshot(self.settings.reload_root)
                    path = changed_file(files, current)
                    files = current
                    if path is not None:
                        self._begin_reload(path)
                        continue
                if not self.children and not self._waiting_for_change:
                    logger.info("every worker process finished")
                    break
        finally:
            self._kill_all()
            for child in list(self.children.values()):
                child.process.wait()
            restore()
            for server in self._servers:
                server.stop()
            os.close(self._ready_r)
            os.close(self._ready_w)
        logger.info("supervisor exits with code %d", self.exit_code)
        return self.exit_code
