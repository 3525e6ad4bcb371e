"""Soak benchmark: many jobs through `repid worker --processes 2` while the broker restarts
and worker processes are killed; prints what was confirmed, run, run twice and lost.

    python benchmarks/soak.py [--broker redis|rabbitmq|both|redis-cluster|rabbitmq-cluster]
                              [--jobs 100000] [--restarts 3] [--kills 3] [--short] [--keep]
                              [--cluster-ports 7110,7111,7112] [--node-down 3]
                              [--rabbit-cluster-port 5740]

For each broker it starts a private server (Redis with appendonly, every write fsynced,
on a port and data directory of its own; a RabbitMQ node of its own, see tests/servers/),
never the shared ones, then:

- runs `repid worker benchmarks/soak_app.py:worker --processes 2 --health-port P` as a
  subprocess; each job works `--work` seconds, then counts its run in the shared Redis
  (`--record-dsn`, never restarted) under a prefix of this run (see soak_app.py);
- enqueues the jobs with `await Job(...).enqueue()` from 32 concurrent producers (at most
  `--rate` a second), each job with its own id; an enqueue that raised is retried until
  it is confirmed, and counts as not confirmed until then;
- restarts the broker `--restarts` times (Redis: SIGKILL, then a start on the same data;
  RabbitMQ: `rabbitmqctl stop_app` / `start_app`, durable queues and persistent messages
  stay; `redis-cluster`, which `both` does not include: a private three-master Redis
  Cluster on `--cluster-ports`, whose node serving the soak's queue is SIGKILLed, left down
  `--node-down` seconds, then started on the same data; `rabbitmq-cluster`, not in `both`
  either: three private RabbitMQ nodes in one cluster from `--rabbit-cluster-port`, quorum
  queues, producer and workers given every node, whose node holding the queue's leader is
  stopped, left down `--node-down` seconds, then started again) and SIGKILLs a worker process
  `--kills` times, alternating. The jobs are cut into
  one segment more than there are faults: fault i strikes when half of segment i ran and
  after the supervisor's /healthz says every worker process is ready, and segment i+1 is
  enqueued only once fault i began. So each fault meets jobs queued and in flight, and work
  follows it, whatever the speeds (see `schedule`).

It then waits until every confirmed job ran, or the soak stalls (no completion for
`--drain-timeout` s), or `--drain-timeout` s passed after the last enqueue and fault, and
prints the accounting, then one line of JSON with the same figures:

- attempted: distinct jobs the producers tried to enqueue; confirmed: those whose enqueue
  returned (after retries); enqueue_errors: enqueue calls that raised;
- run: distinct jobs that ran to the end; duplicates: jobs that ran more than once (at-least-
  once delivery allows them; each counts once, whatever its extra runs);
- lost: confirmed jobs that never ran; dead_lettered: the queue's dead-letter count (a
  dead-lettered job is also lost, as it did not run); missing: lost and not dead;
- longest_gap: the longest time with no job completing while jobs were outstanding,
  sampled every 0.2 s, and when it began; faults: when each struck, how long the restart
  took and how long until the next completion; unexpected_worker_deaths: worker processes
  the supervisor saw die beyond the ones killed; supervisor_exits: exit codes of a
  supervisor that stopped by itself (it is started again).

The exit code is 1 when lost > 0, a job was never confirmed, a fault never happened, or
longest_gap > 30 s. After a failure the end of the worker processes' log is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from redis.asyncio import Redis

from repid import Connection, Job, Queue
from repid.brokers.base import MessageBroker
from repid.data import MessageCategory

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the private server launchers live in tests/servers

from tests.servers.ports import free_port  # noqa: E402
from tests.servers.rabbit_node import free_port as rabbit_free_port  # noqa: E402

APP = Path(__file__).resolve().parent / "soak_app.py"
GAP_LIMIT_SECONDS = 30.0
SAMPLE_SECONDS = 0.2
PRODUCERS = 32
HEALTH_TIMEOUT_SECONDS = 60.0


# --- the broker under test ---------------------------------------------------------------


class BrokerServer(Protocol):
    """A private broker server the soak may restart."""

    dsn: str

    def start(self) -> None: ...

    def fault(self) -> None: ...

    def stop(self) -> None: ...


class RedisServer:
    """A private Redis with appendonly on; a fault is SIGKILL and a start on the same data."""

    def __init__(self, workdir: Path) -> None:
        from tests.servers.redis_server import PrivateRedis

        self.server = PrivateRedis(free_port(), appendonly=True, directory=workdir / "redis")
        self.dsn = ""

    def start(self) -> None:
        self.server.start()
        self.dsn = self.server.dsn

    def fault(self) -> None:
        self.server.kill()
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


class RabbitServer:
    """A private RabbitMQ node; a fault is stop_app then start_app (the Erlang VM stays,
    durable queues and persistent messages come back)."""

    def __init__(self, workdir: Path) -> None:
        from tests.servers.rabbit_node import PrivateRabbit

        self.server = PrivateRabbit(rabbit_free_port(),
                                    workdir / "rabbit")
        self.dsn = ""

    def start(self) -> None:
        self.server.start()
        self.dsn = self.server.dsn

    def fault(self) -> None:
        self.server.stop_app()
        self.server.start_app()

    def stop(self) -> None:
        self.server.stop()


class RedisClusterServer:
    """A private three-master Redis Cluster (appendonly on every node); a fault is a SIGKILL
    of the node serving the soak's queue, `down` seconds without it, then a start on the
    same data and cluster config (see tests/servers/redis_cluster.py)."""

    def __init__(self, workdir: Path, ports: tuple[int, ...], down: float) -> None:
        from tests.servers.redis_cluster import PrivateRedisCluster

        self.server = PrivateRedisCluster(ports, directory=workdir / "redis-cluster")
        self.down = down
        self.queue = ""  # set by the soak: its node is the one stopped
        self.dsn = ""

    def start(self) -> None:
        self.server.start()
        self.dsn = self.server.dsn

    def fault(self) -> None:
        from redis.crc import key_slot

        node = self.server.owner_of(key_slot(f"repid:{{{self.queue}}}:msgs".encode()))
        self.server.stop_node(node)
        time.sleep(self.down)
        self.server.start_node(node)

    def stop(self) -> None:
        self.server.stop()


class RabbitClusterServer:
    """Three private RabbitMQ nodes in one cluster (see tests/servers/rabbit_cluster.py); a
    fault stops the node holding the leader of the soak's quorum queue, `down` seconds
    without it, then starts it again (it rejoins with its data)."""

    def __init__(self, workdir: Path, first_port: int, down: float) -> None:
        from tests.servers.rabbit_cluster import PrivateRabbitCluster

        self.server = PrivateRabbitCluster(first_port, workdir / "rabbit-cluster")
        self.down = down
        self.queue = ""  # set by the soak: its leader's node is the one stopped
        self.dsn = ""

    def start(self) -> None:
        self.server.start()
        self.dsn = self.server.dsn

    def fault(self) -> None:
        node = self.server.leader_of(self.queue)
        self.server.stop_node(node)
        time.sleep(self.down)
        self.server.start_node(node)

    def stop(self) -> None:
        self.server.stop()


def make_broker(kind: str, dsn: str) -> MessageBroker:
    """The repid broker the producer uses (the workers make theirs from the same DSN, or,
    on the RabbitMQ cluster, soak_app.py's quorum connection)."""
    if kind in ("redis", "redis-cluster"):
        from repid import RedisMessageBroker

        return RedisMessageBroker(dsn)
    from repid import RabbitMessageBroker

    if kind == "rabbitmq-cluster":
        return RabbitMessageBroker(dsn, queue_type="quorum")
    return RabbitMessageBroker(dsn)


# --- the worker processes ------------------------------------------------------------------


def child_pids(parent: int) -> list[int]:
    """The pids of the live processes whose parent is `parent`, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name in parentheses may contain spaces: fields follow the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


class Workers:
    """`repid worker soak_app.py:worker --processes N` under a supervisor we can watch."""

    def __init__(self, env: dict[str, str], processes: int, log: Path) -> None:
        self.env = env
        self.processes = processes
        self.log = log
        self.health_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.exits: list[int] = []  # exit codes of supervisors that stopped on their own

    def start(self) -> None:
        command = [sys.executable, "-m", "repid.cli", "worker", f"{APP}:worker",
                   "--processes", str(self.processes), "--health-port", str(self.health_port),
                   "--bind", "127.0.0.1", "--log-level", "warning"]
        if self.env.get("SOAK_QUEUE_TYPE"):  # the broker is soak_app.py's, not the DSN's
            command += ["--app", f"{APP}:app"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log,
                                            cwd=ROOT)

    def check(self) -> None:
        """Start the supervisor again if it exited by itself (noting its exit code)."""
        if self.process is not None and self.process.poll() is not None:
            self.exits.append(self.process.returncode)
            self.start()

    def ready(self) -> bool:
        """Whether the supervisor's /healthz says every worker process is ready."""
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    async def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            if await asyncio.to_thread(self.ready):
                return True
            await asyncio.sleep(0.2)
        return False

    def kill_one(self, which: int) -> int | None:
        """SIGKILL one worker process (the `which`-th, cycling); its pid, or None."""
        if self.process is None:
            return None
        pids = child_pids(self.process.pid)
        if not pids:
            return None
        pid = pids[which % len(pids)]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        """SIGTERM the supervisor (it stops its workers gracefully); SIGKILL if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        pids = child_pids(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        for pid in pids:  # workers of a supervisor that was killed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def unexpected_deaths(self, kills: int) -> int:
        """Worker processes that died, per the supervisor's log, beyond the ones we killed."""
        died = sum("died (" in line for line in self.log.read_text(errors="replace")
                   .splitlines())
        return max(0, died - kills)


# --- producing, sampling, faulting -----------------------------------------------------------


@dataclass
class Settings:
    """What one soak runs (see the command line options)."""

    broker: str
    jobs: int
    restarts: int
    kills: int
    processes: int
    record_dsn: str
    drain_timeout: float
    job_timeout: timedelta | None
    rate: float
    work: float
    cluster_ports: tuple[int, ...] = (7110, 7111, 7112)
    node_down: float = 3.0
    rabbit_cluster_port: int = 5740


@dataclass
class Tally:
    """What the producers did."""

    attempted: int = 0
    calls: int = 0
    errors: int = 0
    confirmed: set[int] = field(default_factory=set)
    error_kinds: dict[str, int] = field(default_factory=dict)
    done: bool = False
    stop: bool = False  # set by the soak when it gives up waiting


@dataclass
class Fault:
    """One fault: due once `at_run` jobs ran; jobs from `gate` on are enqueued only after
    it started, so every fault is followed by work (see `schedule`)."""

    kind: str
    at_run: int
    gate: int
    started: asyncio.Event = field(default_factory=asyncio.Event)
    seconds: float | None = None  # since the soak started; None: it never happened
    took: float = 0.0  # the fault itself (restart time; 0 for a kill)
    ended: float | None = None  # monotonic time the fault's action returned
    detail: str = ""

    def report(self, progress: Progress) -> dict[str, Any]:
        """The fault as JSON; `recovered_after`: seconds from its end to the next job
        completion (None: no job completed after it)."""
        after = None if self.ended is None else progress.first_change_after(self.ended)
        return {"kind": self.kind, "at_run": self.at_run, "seconds": self.seconds,
                "took": self.took,
                "recovered_after": None if after is None else round(after, 2),
                "detail": self.detail}


def schedule(restarts: int, kills: int, jobs: int) -> list[Fault]:
    """Faults alternating restart/kill over F+1 equal segments of the jobs.

    Fault i is due when half of segment i ran, and segment i+1 is enqueued only once it
    started: so each fault strikes with jobs queued and in flight, the producers meet
    broker restarts, and work follows each fault whatever the relative speeds of the
    producers and the workers (the producers stay at most ~1.5 segments ahead)."""
    kinds = [k for pair in itertools.zip_longest(["restart"] * restarts, ["kill"] * kills)
             for k in pair if k is not None]
    size = jobs / (len(kinds) + 1)
    return [Fault(kind, int(size * (i + 0.5)), int(size * (i + 1)))
            for i, kind in enumerate(kinds)]


async def produce(connection: Connection, queue: str, run_id: str, settings: Settings,
                  faults: list[Fault], tally: Tally) -> None:
    """Enqueue jobs 0..jobs-1 from PRODUCERS concurrent tasks, at most `settings.rate` a
    second (0: no limit), retrying each until it is confirmed (or the soak stops), holding
    each fault's segment until the fault started."""
    numbers: Iterator[int] = iter(range(settings.jobs))
    extra: dict[str, Any] = ({} if settings.job_timeout is None
                             else {"timeout": settings.job_timeout})
    next_slot = time.monotonic()

    async def pace() -> None:
        nonlocal next_slot
        if settings.rate > 0:
            now = time.monotonic()
            slot = max(next_slot, now)
            next_slot = slot + 1 / settings.rate
            await asyncio.sleep(slot - now)

    async def producer() -> None:
        for n in numbers:
            for fault in faults:
                if n >= fault.gate:
                    await fault.started.wait()
            await pace()
            if tally.stop:
                return
            tally.attempted += 1
            job = Job("soak_job", queue=queue, id_=f"{run_id}-{n}", args={"n": n},
                      _connection=connection, **extra)
            pause = 0.05
            while not tally.stop:
                tally.calls += 1
                try:
                    await job.enqueue()
                except Exception as exc:
                    tally.errors += 1
                    kind = type(exc).__name__
                    tally.error_kinds[kind] = tally.error_kinds.get(kind, 0) + 1
                    await asyncio.sleep(pause)
                    pause = min(1.0, pause * 2)
                    continue
                tally.confirmed.add(n)
                break

    try:
        await asyncio.gather(*(producer() for _ in range(PRODUCERS)))
    finally:
        tally.done = True


@dataclass
class Progress:
    """Completions over time, sampled from the record store."""

    run: int = 0
    started: float | None = None  # first completion
    last_change: float = 0.0
    longest_gap: float = 0.0
    longest_gap_from: float = 0.0  # when the longest gap began
    finished: bool = False
    changes: list[float] = field(default_factory=list)  # when the count went up
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set on each change

    def note(self, count: int, now: float) -> None:
        if count > self.run:
            if self.started is None:
                self.started = now
            elif now - self.last_change > self.longest_gap:
                self.longest_gap = now - self.last_change
                self.longest_gap_from = self.last_change
            self.run = count
            self.last_change = now
            self.changes.append(now)
            self._wake()

    def finish(self) -> None:
        self.finished = True
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def wait_until(self, run: int) -> None:
        """Wait until at least `run` distinct jobs ran, or the soak finished."""
        while self.run < run and not self.finished:
            await self.changed.wait()

    def first_change_after(self, moment: float) -> float | None:
        """Seconds from `moment` to the first completion seen after it; None if none."""
        later = (t for t in self.changes if t > moment)
        first = next(later, None)
        return None if first is None else first - moment

    def current_gap(self, now: float, since: float) -> float:
        """Seconds since the last completion (or since `since`, before the first one)."""
        return now - (since if self.started is None else self.last_change)


async def sample(records: Redis, key: str, progress: Progress) -> None:
    """Read the number of distinct jobs run every SAMPLE_SECONDS until finished."""
    while not progress.finished:
        try:
            count = int(await records.hlen(key))
        except Exception:  # the record store is shared and never restarted; keep sampling
            count = progress.run
        progress.note(count, time.monotonic())
        await asyncio.sleep(SAMPLE_SECONDS)


async def inject(faults: list[Fault], server: BrokerServer, workers: Workers,
                 progress: Progress, begun: float) -> None:
    """Run each fault once its progress mark is reached and the workers are all ready."""
    try:
        for i, fault in enumerate(faults):
            await progress.wait_until(fault.at_run)
            if progress.finished:
                return
            if not await workers.wait_ready(HEALTH_TIMEOUT_SECONDS):
                fault.detail = "workers were not all ready before it; "
            start = time.monotonic()
            fault.seconds = round(start - begun, 1)
            fault.started.set()
            if fault.kind == "restart":
                await asyncio.to_thread(server.fault)
            else:
                pid = workers.kill_one(i)
                fault.detail += f"killed pid {pid}" if pid else "no worker process to kill"
            fault.ended = time.monotonic()
            fault.took = round(fault.ended - start, 2)
    finally:
        for fault in faults:  # let the producers finish whatever happened here
            fault.started.set()


# --- one soak --------------------------------------------------------------------------------


async def all_ran(records: Redis, key: str, tally: Tally) -> bool:
    """Whether the producers are done and every confirmed job ran."""
    if not tally.done:
        return False
    if int(await records.hlen(key)) < len(tally.confirmed):
        return False
    ran = {int(k) for k in await records.hkeys(key)}
    return tally.confirmed <= ran


async def dead_ids(queue: Queue) -> set[str]:
    """The ids in the queue's dead-letter queue."""
    return {m.key.id_ async for m in queue.get_messages(category=MessageCategory.DEAD,
                                                          stop_when_empty=True)}


async def drive(settings: Settings, records: Redis, runs_key: str, tally: Tally,
                progress: Progress, injecting: asyncio.Task[None], workers: Workers,
                begun: float) -> float:
    """Wait until every confirmed job ran, the soak stalls (no completion for
    `drain_timeout` s) or the drain after the last enqueue and fault times out; the gap
    still open at the end (0 when everything ran)."""
    drain_deadline: float | None = None
    while not await all_ran(records, runs_key, tally):
        now = time.monotonic()
        if tally.done and injecting.done() and drain_deadline is None:
            drain_deadline = now + settings.drain_timeout
        stalled = progress.current_gap(now, begun) > settings.drain_timeout
        if stalled or (drain_deadline is not None and now > drain_deadline):
            return progress.current_gap(now, begun)
        workers.check()
        await asyncio.sleep(0.5)
    return 0.0


async def soak(settings: Settings, workdir: Path) -> dict[str, Any]:
    """Run one soak against a private server of `settings.broker`; the accounting."""
    server: BrokerServer
    run_id = f"soak{uuid.uuid4().hex[:10]}"
    queue_name = run_id
    if settings.broker == "redis-cluster":
        server = cluster = RedisClusterServer(workdir, settings.cluster_ports,
                                              settings.node_down)
        cluster.queue = queue_name
    elif settings.broker == "rabbitmq-cluster":
        server = rabbits = RabbitClusterServer(workdir, settings.rabbit_cluster_port,
                                               settings.node_down)
        rabbits.queue = queue_name
    else:
        server = RedisServer(workdir) if settings.broker == "redis" else RabbitServer(workdir)
    records = Redis.from_url(settings.record_dsn)
    runs_key = f"{run_id}:runs"
    workers: Workers | None = None
    connection: Connection | None = None
    try:
        await asyncio.to_thread(server.start)
        connection = Connection(make_broker(settings.broker, server.dsn))
        await connection.connect()
        queue = Queue(queue_name, _connection=connection)
        await queue.declare()
        env = {**os.environ, "REPID_BROKER_DSN": server.dsn, "SOAK_QUEUE": queue_name,
               "SOAK_RECORD_DSN": settings.record_dsn, "SOAK_RECORD_PREFIX": run_id,
               "SOAK_WORK_SECONDS": str(settings.work),
               **({"SOAK_QUEUE_TYPE": "quorum"} if settings.broker == "rabbitmq-cluster"
                  else {}),
               "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
        workers = Workers(env, settings.processes, workdir / f"{settings.broker}-workers.log")
        workers.start()
        if not await workers.wait_ready(HEALTH_TIMEOUT_SECONDS):
            raise RuntimeError(f"the worker processes did not start; see {workers.log}")

        tally, progress = Tally(), Progress()
        faults = schedule(settings.restarts, settings.kills, settings.jobs)
        begun = time.monotonic()
        sampler = asyncio.create_task(sample(records, runs_key, progress))
        producing = asyncio.create_task(produce(connection, queue_name, run_id, settings,
                                                faults, tally))
        injecting = asyncio.create_task(inject(faults, server, workers, progress, begun))
        open_gap = await drive(settings, records, runs_key, tally, progress, injecting,
                               workers, begun)
        ended = time.monotonic()
        tally.stop = True
        progress.finish()
        # a fault in progress (a restart) is let finish: the server must be up to count
        await asyncio.wait({injecting, producing}, timeout=120)
        for task in (injecting, producing):
            task.cancel()
        await asyncio.gather(sampler, producing, injecting, return_exceptions=True)
        if not injecting.cancelled() and injecting.exception() is not None:
            raise RuntimeError("a fault could not be made") from injecting.exception()
        workers.stop()

        gap, gap_from = progress.longest_gap, progress.longest_gap_from
        if open_gap > gap:  # still open at the end: from the last completion, or the start
            gap, gap_from = open_gap, ended - open_gap
        counts = {int(k): int(v) for k, v in (await records.hgetall(runs_key)).items()}
        stats = await queue.stats()
        dead = await dead_ids(queue)
        lost = tally.confirmed - set(counts)
        missing = {n for n in lost if f"{run_id}-{n}" not in dead}
        return {
            "broker": settings.broker,
            "jobs": settings.jobs,
            "attempted": tally.attempted,
            "confirmed": len(tally.confirmed),
            "not_confirmed": settings.jobs - len(tally.confirmed),
            "enqueue_calls": tally.calls,
            "enqueue_errors": tally.errors,
            "enqueue_error_kinds": tally.error_kinds,
            "run": len(counts),
            "duplicates": sum(1 for v in counts.values() if v > 1),
            "extra_runs": sum(v - 1 for v in counts.values()),
            "lost": len(lost),
            "dead_lettered": stats["dead"],
            "missing": len(missing),
            "missing_sample": sorted(missing)[:10],
            "left_in_queue": {k: stats[k] for k in ("ready", "delayed", "in_flight")},
            "longest_gap": round(gap, 2),
            "longest_gap_at": round(gap_from - begun, 1),
            "seconds": round(ended - begun, 1),
            "jobs_per_second": round(len(counts) / max(ended - begun, 1e-9), 1),
            "restarts": sum(f.kind == "restart" and f.seconds is not None for f in faults),
            "kills": sum(f.kind == "kill" and f.seconds is not None for f in faults),
            "faults": [f.report(progress) for f in faults],
            "unexpected_worker_deaths": workers.unexpected_deaths(settings.kills),
            "supervisor_exits": workers.exits,
        }
    finally:
        if workers is not None:
            workers.stop()
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.disconnect()
        with contextlib.suppress(Exception):
            await records.delete(runs_key)
        await records.aclose()
        await asyncio.to_thread(server.stop)


def failed(result: dict[str, Any]) -> list[str]:
    """Why a soak failed; empty when it passed."""
    reasons = []
    if result["lost"]:
        reasons.append(f"{result['lost']} confirmed jobs never ran")
    if result["not_confirmed"]:
        reasons.append(f"{result['not_confirmed']} jobs were never confirmed")
    skipped = [f["kind"] for f in result["faults"] if f["seconds"] is None]
    if skipped:
        reasons.append(f"faults that never happened: {', '.join(skipped)}")
    if result["longest_gap"] > GAP_LIMIT_SECONDS:
        reasons.append(f"no job completed for {result['longest_gap']} s "
                       f"(limit {GAP_LIMIT_SECONDS:.0f} s)")
    return reasons


def summary(result: dict[str, Any]) -> str:
    """The accounting as text."""
    lines = [
        f"soak on {result['broker']}: {result['jobs']:,} jobs, {result['restarts']} broker "
        f"restarts, {result['kills']} worker kills, {result['seconds']} s "
        f"({result['jobs_per_second']:,.0f} jobs/s)",
        f"  enqueued (attempted) {result['attempted']:>9,}   confirmed {result['confirmed']:,}"
        f"   enqueue errors {result['enqueue_errors']:,} {result['enqueue_error_kinds']}",
        f"  run (distinct)       {result['run']:>9,}   duplicates {result['duplicates']:,} "
        f"({result['extra_runs']:,} extra runs)",
        f"  lost                 {result['lost']:>9,}   dead-lettered {result['dead_lettered']}"
        f"   missing {result['missing']}   left in queue {result['left_in_queue']}",
        f"  longest gap          {result['longest_gap']:>8} s (from {result['longest_gap_at']} s)"
        f"   unexpected worker deaths "
        f"{result['unexpected_worker_deaths']}   supervisor exits {result['supervisor_exits']}",
    ]
    for fault in result["faults"]:
        if fault["seconds"] is None:
            lines.append(f"  {fault['kind']:<8} never happened (due after "
                         f"{fault['at_run']:,} runs)")
            continue
        recovered = ("never" if fault["recovered_after"] is None
                     else f"{fault['recovered_after']} s later")
        lines.append(f"  {fault['kind']:<8} at {fault['seconds']:>6} s (after "
                     f"{fault['at_run']:,} runs), took {fault['took']} s, next completion "
                     f"{recovered}; {fault['detail']}".rstrip("; "))
    reasons = failed(result)
    lines.append("  FAILED: " + "; ".join(reasons) if reasons else "  passed")
    return "\n".join(lines)


def show_logs(workdir: Path, lines: int = 40) -> None:
    """Print the end of the worker processes' log to stderr (after a failed soak)."""
    for log in sorted(workdir.glob("*-workers.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"--- last {len(tail)} lines of {log.name}", *tail, sep="\n", file=sys.stderr,
              flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--broker", choices=("redis", "rabbitmq", "both", "redis-cluster",
                                             "rabbitmq-cluster"),
                        default="both",
                        help="redis-cluster: a private three-master Redis Cluster whose node "
                             "serving the queue is stopped and started again; "
                             "rabbitmq-cluster: three RabbitMQ nodes with quorum queues, "
                             "the queue leader's node stopped and started (neither in both)")
    parser.add_argument("--rabbit-cluster-port", type=int, default=5740,
                        help="first AMQP port of the rabbitmq-cluster nodes (3 in a row; "
                             "distribution ports: +20000)")
    parser.add_argument("--cluster-ports", default="7110,7111,7112",
                        help="the ports of the redis-cluster nodes (bus ports: +10000)")
    parser.add_argument("--node-down", type=float, default=3.0,
                        help="seconds a stopped cluster node stays down (default 3)")
    parser.add_argument("--jobs", type=int, default=None, help="default 100,000 (short: 2,000)")
    parser.add_argument("--restarts", type=int, default=None, help="default 3 (short: 1)")
    parser.add_argument("--kills", type=int, default=None, help="default 3 (short: 1)")
    parser.add_argument("--short", action="store_true",
                        help="the CI form: 2,000 jobs, 1 restart, 1 kill")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--drain-timeout", type=float, default=None,
                        help="seconds to wait for the last jobs (default 120, short 45)")
    parser.add_argument("--rate", type=float, default=None,
                        help="enqueues per second at most, 0 for no limit (default 0; "
                             "short: 200, so that the faults meet a steady flow)")
    parser.add_argument("--work", type=float, default=0.1,
                        help="seconds each job works, so kills catch jobs in flight "
                             "(default 0.1)")
    parser.add_argument("--job-timeout", type=float, default=None,
                        help="each Job's timeout in seconds (default: Job's own)")
    parser.add_argument("--record-dsn", default=os.environ.get(
        "REPID_TEST_REDIS_DSN", "redis://127.0.0.1:6379/0"),
        help="the shared Redis the actors count their runs in (never restarted)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    short = args.short
    args.jobs = args.jobs if args.jobs is not None else 2000 if short else 100_000
    args.restarts = args.restarts if args.restarts is not None else 1 if short else 3
    args.kills = args.kills if args.kills is not None else 1 if short else 3
    args.rate = args.rate if args.rate is not None else 200.0 if short else 0.0
    args.drain_timeout = (args.drain_timeout if args.drain_timeout is not None
                          else 45.0 if short else 120.0)
    return args


async def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("aio_pika", "aiormq"):  # every restart drops the producer's connection
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    brokers = ["redis", "rabbitmq"] if args.broker == "both" else [args.broker]
    code = 0
    for broker in brokers:
        workdir = Path(tempfile.mkdtemp(prefix=f"repid-soak-{broker}-"))
        result: dict[str, Any] | None = None
        try:
            result = await soak(Settings(
                broker, args.jobs, args.restarts, args.kills, args.processes, args.record_dsn,
                args.drain_timeout,
                None if args.job_timeout is None else timedelta(seconds=args.job_timeout),
                args.rate, args.work,
                tuple(int(port) for port in args.cluster_ports.split(",")), args.node_down,
                args.rabbit_cluster_port),
                workdir)
        finally:
            if result is None or failed(result) or result["supervisor_exits"] \
                    or result["unexpected_worker_deaths"]:
                show_logs(workdir)
            if args.keep:
                print(f"work directory kept: {workdir}", flush=True)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        print(summary(result), flush=True)
        print(json.dumps(result), flush=True)
        code = code or (1 if failed(result) else 0)
    return code


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
