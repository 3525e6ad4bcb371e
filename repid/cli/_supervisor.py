"""The supervisor behind `repid worker --processes N` and `--reload`.

It starts N worker processes (each one `python -m repid.cli worker ...`), restarts one that
dies (after a delay doubling from 0.5 s to 30 s while processes keep dying young) and, with
`--messages-limit`, one that exits 0 having reached its limit (at once: not a failure), forwards
SIGTERM/SIGINT so they shut down gracefully (a second signal is forwarded at once, so they
return their jobs without waiting for the grace time), and serves `/healthz` and `/metrics`
for all of them.

A worker process reports over a pipe the supervisor reads: a first line when it is ready
(connected, queues declared, consuming), then one every `HEARTBEAT_SECONDS` saying whether
it can take messages (`report_line`). `/healthz` is 503 while a process is not ready, says
it has a problem, or has been silent for longer than the unhealthy threshold.

```mermaid
stateDiagram-v2
    [*] --> starting: spawn N
    starting --> running: every process ready
    running --> starting: a process died, spawn a new one after the backoff delay
    starting --> failed: N processes died before they were ready
    running --> stopping: SIGTERM / SIGINT (forwarded as SIGTERM)
    stopping --> stopping: signal again (forwarded at once), a third one kills
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

from repid.cli._reload import changed_file, snapshot
from repid.worker._health import HttpServer, Route, ServerThread
from repid.worker._signals import STOP_SIGNALS, StopSignals, install

logger = logging.getLogger("repid.cli._supervisor")

READY_FD_ENV = "_REPID_READY_FD"
SUPERVISOR_PID_ENV = "_REPID_SUPERVISOR_PID"
INDEX_ENV = "REPID_WORKER_INDEX"

POLL_SECONDS = 0.2
RELOAD_POLL_SECONDS = 1.0
KILL_MARGIN_SECONDS = 5.0
#: a worker process reports its state this often
HEARTBEAT_SECONDS = 1.0
#: silence tolerated from a worker process, at least (a slow machine is not a dead loop)
MIN_SILENCE_SECONDS = 3.0
#: restart delays: the first, the cap, and how long a process must live to reset them
RESTART_FIRST_SECONDS = 0.5
RESTART_MAX_SECONDS = 30.0
RESTART_RESET_SECONDS = 60.0
#: a report line stays below PIPE_BUF, so lines of different processes never interleave
MAX_REPORT_BYTES = 1024


def report_line(pid: int, problem: str | None) -> bytes:
    """What a worker process writes to the pipe: `PID ok` or `PID problem REASON`."""
    if problem is None:
        return f"{pid} ok\n".encode()
    reason = " ".join(problem.split()).encode()[:MAX_REPORT_BYTES]
    return f"{pid} problem ".encode() + reason + b"\n"


def parse_report(line: bytes) -> tuple[int, str | None] | None:
    """(pid, problem or None) of a report line; None for a line that is not one. A bare
    `PID` (the first line of older worker processes) means ready and fine."""
    parts = line.decode(errors="replace").split(maxsplit=2)
    if not parts or not parts[0].isdigit():
        return None
    pid = int(parts[0])
    if len(parts) >= 2 and parts[1] == "problem":
        return pid, parts[2] if len(parts) == 3 else "unknown problem"
    return pid, None


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
    unhealthy_after: float = 30.0  # seconds a process may be silent before /healthz is 503
    #: replace a ready process that exits 0 by itself (`--messages-limit`: it did its share)
    replace_finished: bool = False


@dataclass
class Child:
    """One worker process."""

    index: int
    process: subprocess.Popen[bytes]
    ready: bool = False
    problem: str | None = None  # the last reason it reported, None while it can take
    started: float = field(default_factory=time.monotonic)
    last_report: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid


class Backoff:
    """Restart delays of one worker process: 0.5 s doubling to 30 s while it keeps dying
    within 60 s of its start; back to 0.5 s once it lived longer."""

    def __init__(self) -> None:
        self.next = RESTART_FIRST_SECONDS

    def delay(self, lived: float) -> float:
        """The delay before restarting a process that lived `lived` seconds."""
        if lived >= RESTART_RESET_SECONDS:
            self.next = RESTART_FIRST_SECONDS
        delay = self.next
        self.next = min(delay * 2, RESTART_MAX_SECONDS)
        return delay


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
        self._signals: list[int] = []  # received by the handler, handled by the loop
        self._stop_signals = StopSignals(self._on_first_signal, self._on_second_signal,
                                         self._on_third_signal)
        self._ready_r, self._ready_w = os.pipe()
        self._buffer = b""
        self._servers: list[ServerThread] = []
        self._backoff: dict[int, Backoff] = {}
        self._restart_at: dict[int, float] = {}  # index -> when to start it again

    # --- HTTP -----------------------------------------------------------------------------

    def _problem(self, child: Child, now: float) -> str | None:
        """What is wrong with a ready process: what it reported, or its silence."""
        silent = now - child.last_report
        if silent > max(self.settings.unhealthy_after, MIN_SILENCE_SECONDS):
            return (f"worker process {child.index} (pid {child.pid}) has not reported for "
                    f"{silent:.0f} s: its event loop may be blocked")
        if child.problem is not None:
            return f"worker process {child.index} (pid {child.pid}): {child.problem}"
        return None

    def health(self) -> tuple[int, str, bytes]:
        """`/healthz`: 200 when every worker process is ready and can take messages, else
        503; JSON with the pids and the problems. Called from the HTTP thread: it only
        reads (a copy of the process table)."""
        now = time.monotonic()
        children = sorted(list(self.children.values()), key=lambda c: c.index)
        ready = sum(child.ready for child in children)
        problems = {c.index: p for c in children if c.ready
                    for p in [self._problem(c, now)] if p is not None}
        ok = (ready == self.settings.processes and not problems and not self.stopping
              and not self._reloading)
        status = ("ok" if ok else "stopping" if self.stopping
                  else "unhealthy" if problems else "starting")
        body = {"status": status, "ready": ready, "processes": self.settings.processes,
                "problems": list(problems.values()),
                "workers": [{"index": c.index, "pid": c.pid, "ready": c.ready,
                             "problem": problems.get(c.index)} for c in children]}
        return (200 if ok else 503, "application/json",
                json.dumps(body).encode() + b"\n")

    def metrics(self) -> tuple[int, str, bytes]:
        """`/metrics`: the sum of every worker process's metrics (multiprocess mode)."""
        from repid_plugins.prometheus import render_multiprocess

        return 200, *render_multiprocess(self.settings.metrics_dir)

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
            server = ServerThread(HttpServer(address, port, routes))
            try:
                server.start()
            except OSError as exc:
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                raise OSError(exc.errno, reason, f"{address}:{port}") from None
            self._servers.append(server)

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
        """Wait up to `timeout` for reports; the first marks a process ready, each one
        records whether it can take messages."""
        readable, _, _ = select.select([self._ready_r], [], [], timeout)
        if not readable:
            return
        self._buffer += os.read(self._ready_r, 65536)
        *lines, self._buffer = self._buffer.split(b"\n")
        by_pid = {child.pid: child for child in self.children.values()}
        now = time.monotonic()
        for line in lines:
            report = parse_report(line)
            child = None if report is None else by_pid.get(report[0])
            if child is None or report is None:
                continue
            child.last_report = now
            if not child.ready:
                child.ready = True
                self._failed_starts = 0
                logger.info("worker process %d (pid %d) is ready", child.index, child.pid)
            if report[1] != child.problem:
                if report[1] is None:
                    logger.info("worker process %d (pid %d) can take messages again",
                                child.index, child.pid)
                else:
                    logger.warning("worker process %d (pid %d) reports: %s", child.index,
                                   child.pid, report[1])
                child.problem = report[1]

    def _reap(self) -> None:
        """Collect the worker processes that exited and handle each."""
        exited = [(child, code) for child in list(self.children.values())
                  for code in [child.process.poll()] if code is not None]
        if exited:
            # a process may have reported ready just before dying: read that first
            self._read_ready(0)
        for child, code in exited:
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
            # A process dies of the SIGTERM the stop forwarded only where no handler is
            # installed: still starting, or already past its worker's end (its
            # --messages-limit reached, exiting). Either way it stopped as asked, holding
            # no job: not a failure. A running worker handles SIGTERM and exits 0.
            stopped_as_asked = code == -signal.SIGTERM
            if code != 0 and self.stopping and not stopped_as_asked:
                self.exit_code = self.exit_code or 1
            return
        if code == 0 and child.ready and self.settings.replace_finished:
            logger.info("worker process %d (pid %d) reached its --messages-limit; starting "
                        "a new one", child.index, child.pid)
            self._restart_at[child.index] = time.monotonic()
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
        lived = time.monotonic() - child.started
        delay = self._backoff.setdefault(child.index, Backoff()).delay(lived)
        logger.warning("worker process %d (pid %d) died (%s) after %.1f s; starting a new "
                       "one in %.1f s", child.index, child.pid, how, lived, delay)
        self._restart_at[child.index] = time.monotonic() + delay

    def _restart_due(self, now: float) -> None:
        """Start the worker processes whose restart delay has passed."""
        for index, at in sorted(self._restart_at.items()):
            if now >= at:
                del self._restart_at[index]
                self._spawn(index)

    def _cannot_start(self, code: int) -> None:
        """Give up (or, with --reload, wait for a change): the processes cannot start."""
        how = describe_exit(code)
        self._restart_at.clear()
        if self.settings.reload:
            logger.error("worker processes cannot start (last: %s); waiting for a change "
                         "to try again", how)
            self._waiting_for_change = True
            return
        logger.error("worker processes cannot start: %d exited before they were ready "
                     "(last: %s); giving up", self._failed_starts, how)
        self.exit_code = code if code > 0 else 1
        self._begin_stop()

    # --- stopping and reloading -------------------------------------------------------------

    def _handle_signals(self) -> None:
        """First signal: stop gracefully; second: forward it at once, so the processes
        return their running jobs to the queues and exit; third: kill.

        Worker processes only act on the SIGTERM the supervisor sends (they ignore SIGINT,
        which a terminal's Ctrl-C also delivers to them), so one Ctrl-C is one stop."""
        while self._signals:
            self._stop_signals(self._signals.pop(0))

    def _on_first_signal(self, name: str) -> None:
        logger.info("received %s: stopping %d worker processes (%.1f s to finish their "
                    "jobs; send it again to return them at once)", name, len(self.children),
                    self.settings.grace)
        self._begin_stop()

    def _on_second_signal(self, name: str) -> None:
        logger.warning("received %s again: the worker processes return their running jobs "
                       "to the queues now (a third signal kills them)", name)
        self._send(signal.SIGTERM)
        self._kill_at = time.monotonic() + KILL_MARGIN_SECONDS

    def _on_third_signal(self, name: str) -> None:
        logger.warning("received %s a third time: killing the worker processes", name)
        self._kill_all()

    def _begin_stop(self) -> None:
        """Ask every worker process to stop (SIGTERM) and start the kill deadline."""
        self.stopping = True
        self._restart_at.clear()
        self._send(signal.SIGTERM)
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
        self._restart_at.clear()
        self._reloading = True
        self._send(signal.SIGTERM)
        self._kill_at = time.monotonic() + self.settings.grace + KILL_MARGIN_SECONDS

    # --- the loop ---------------------------------------------------------------------------

    def _install_signals(self) -> Callable[[], None]:
        """Handle SIGINT and SIGTERM; returns a function restoring the old handlers."""
        return install(STOP_SIGNALS, self._signals.append)

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
                if not self.stopping and not self._reloading:
                    self._restart_due(now)
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
                if not self.children and not self._restart_at \
                        and not self._waiting_for_change:
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
