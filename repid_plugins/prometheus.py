"""Prometheus metrics for repid, served at `/metrics` by the worker's health-check server.

Register `MetricsPlugin()` on a `Connection` (the `prometheus` extra). The metrics (with the
default `prefix="repid"`):

- `repid_messages_enqueued_total{queue}`: messages the broker accepted.
- `repid_messages_processed_total{queue,actor,outcome}`: final outcomes only, one per
  message handled, so its sum over outcomes is the number of messages handled:
  - `success`: acked after a successful run (or a recurring job's successful run, requeued
    for its next time);
  - `dead`: dead-lettered (no retries left, expired, undecodable, delivered too often);
  - `failed`: a recurring job's run that failed for good (the message waits for its next
    time instead of dying).
- `repid_actor_runs_total{queue,actor,result}`: every actor run (attempt), `result` is
  `success` or `failure` (raised or timed out), whatever happens to the message next.
- `repid_messages_returned_total{queue,actor,reason}`: deliveries that ended with the
  message back in its queue, to be handled again (not final): `retry`, `reschedule`,
  `recovery`, `unknown_topic` (the requeue reasons, `unknown` when none was given) and
  `reject` (returned unchanged: shutdown, eager reject).
- `repid_actor_exceptions_total{queue,actor,exception_type}`: failed runs by exception type.
- `repid_messages_in_progress{queue,actor}`: actor runs going on now (gauge).
- `repid_message_processing_duration_seconds{queue,actor}`: actor run time (histogram).
- `repid_message_delivery_lag_seconds{queue}`: from when a message became due
  (`params.delay.next_execution_time`, else `params.timestamp`) to when its run started
  (a message dead-lettered or returned without a run is not observed). The start of the
  run is one clock reading, shared with the duration.
- `repid_broker_call_duration_seconds{call}`: each broker call (`enqueue`, `ack`,
  `store_bucket`, ...), except `consume`, whose time is mostly waiting for a message.
- `repid_broker_call_failures_total{call}`: broker calls that raised, e.g. an `ack` on a
  lost connection or a `store_bucket` while the results store is down. A message whose
  settle failed is not counted in `messages_processed_total` nor `messages_returned_total`:
  the broker delivers it again and it is counted then.

Earlier versions of this plugin also kept per-attempt `failure`, `retried` and `rejected`
samples in the processed counter; they are now `repid_actor_runs_total{result="failure"}`
and `repid_messages_returned_total{reason="retry"|"reject"}`. `success` and `dead` keep
their name and meaning.

Cost guarantees, kept by the code below: per-delivery state is only the delivery's stash
(whether its run failed), never a map keyed by message id; the label children of a
(queue, actor) and of each (queue, actor, outcome) are bound once and reused; a run is
timed by one pair of clock readings; a message a worker handles goes through two of its
hooks (its run and its settle), none at the take.

Multiprocess (`repid worker --processes N`): call `setup_multiprocess(dir)` in the supervisor
before anything imports prometheus_client, and `mark_process_dead(pid)` when a child exits;
each worker's `/metrics` then sums every process. This module imports prometheus_client only
when a `MetricsPlugin` is created, so importing it is always safe.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Generator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from repid import StashKey, hookimpl
from repid_plugins._common import error_type
from repid_plugins._fastmetrics import FastCollector

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from repid import Actor, ActorResult, Parameters, RoutingKey, Stash, Worker

__all__ = [
    "BROKER_CALL_BUCKETS",
    "DELIVERY_LAG_BUCKETS",
    "MULTIPROC_ENV",
    "PROCESSING_BUCKETS",
    "MetricsPlugin",
    "is_multiprocess",
    "mark_process_dead",
    "render_multiprocess",
    "setup_multiprocess",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LEGACY_ENV = "prometheus_multiproc_dir"

#: actor run time: 5 ms up to the 15 min a long job may take
PROCESSING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                      60.0, 120.0, 300.0, 600.0, 900.0)
#: how late messages are taken: milliseconds on an idle queue up to an hour of backlog
DELIVERY_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                        60.0, 300.0, 900.0, 1800.0, 3600.0)
#: a broker round trip: sub-millisecond in memory up to seconds on a struggling server
BROKER_CALL_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                       0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

T = TypeVar("T")


# --- multiprocess mode -----------------------------------------------------------------


def _multiproc_dir() -> str | None:
    """The multiprocess directory prometheus_client will use, if any."""
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(_LEGACY_ENV)


def is_multiprocess() -> bool:
    """Whether prometheus_client runs in multiprocess mode (PROMETHEUS_MULTIPROC_DIR set)."""
    return _multiproc_dir() is not None


def setup_multiprocess(directory: str | os.PathLike[str] | None = None, *,
                       wipe: bool = True) -> Path:
    """Prepare multiprocess mode in a supervisor, before prometheus_client is imported.

    Creates `directory` (default: `$PROMETHEUS_MULTIPROC_DIR`), wipes the files a previous run
    left there (stale counters would otherwise be summed in), and sets PROMETHEUS_MULTIPROC_DIR
    so that this process and the worker processes it starts write their metrics there.
    prometheus_client picks its storage when first imported, hence the ordering rule.
    """
    raw = directory if directory is not None else _multiproc_dir()
    if raw is None:
        raise ValueError("setup_multiprocess needs a directory: pass one or set "
                         f"{MULTIPROC_ENV}")
    path = Path(raw).resolve()
    imported = "prometheus_client" in sys.modules
    if imported and _multiproc_dir() != str(path):
        raise RuntimeError(
            "setup_multiprocess() must run before prometheus_client is imported (it picks "
            "single- or multiprocess storage at import); call it first thing in the "
            f"supervisor, or set {MULTIPROC_ENV} in the environment before starting")
    path.mkdir(parents=True, exist_ok=True)
    if wipe and not imported:
        for entry in path.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def render_multiprocess(directory: str | os.PathLike[str] | None = None) -> tuple[str, bytes]:
    """The `/metrics` response summing every process's metrics files in `directory`
    (default: `$PROMETHEUS_MULTIPROC_DIR`): a worker's in multiprocess mode, and the
    supervisor's."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=None if directory is None else str(directory))  # type: ignore[no-untyped-call]
    return CONTENT_TYPE_LATEST, generate_latest(registry)


def mark_process_dead(pid: int, directory: str | os.PathLike[str] | None = None) -> None:
    """Tell multiprocess mode that worker process `pid` exited, so its live gauges (such as
    `messages_in_progress`) stop counting; a supervisor calls it when a child ends."""
    raw = directory if directory is not None else _multiproc_dir()
    if raw is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(raw))  # type: ignore[no-untyped-call]


# --- the metrics -----------------------------------------------------------------------


class _Metrics:
    """The metric families of one (registry, prefix); shared by plugins using the same pair,
    since a registry refuses a metric name twice.

    In a single process they are plain numbers read at scrape (`_fastmetrics`); in
    multiprocess mode, prometheus_client's own metrics, whose values live in shared files.
    Either way a family's `labels(...)` gives a child with `inc`, `dec` or `observe`."""

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        counter: Callable[..., Any]
        gauge: Callable[..., Any]
        histogram: Callable[..., Any]
        fast: FastCollector | None = None
        if is_multiprocess():
            from prometheus_client import Counter, Gauge, Histogram

            def counter(name: str, doc: str, labels: list[str]) -> Any:
                return Counter(name, doc, labels, registry=registry)

            def gauge(name: str, doc: str, labels: list[str]) -> Any:
                return Gauge(name, doc, labels, registry=registry, multiprocess_mode="livesum")

            def histogram(name: str, doc: str, labels: list[str],
                          buckets: tuple[float, ...]) -> Any:
                return Histogram(name, doc, labels, registry=registry, buckets=buckets)
        else:
            fast = FastCollector(registry)
            counter, gauge, histogram = fast.counter, fast.gauge, fast.histogram

        self.enqueued = counter(f"{prefix}_messages_enqueued", "Messages the broker accepted.",
                                ["queue"])
        self.processed = counter(
            f"{prefix}_messages_processed",
            "Messages handled, by final outcome (success, dead, failed); sums to the "
            "messages handled.", ["queue", "actor", "outcome"])
        self.runs = counter(f"{prefix}_actor_runs", "Actor runs (attempts), by result.",
                            ["queue", "actor", "result"])
        self.returned = counter(
            f"{prefix}_messages_returned",
            "Deliveries that put the message back in its queue to be handled again, by "
            "reason.", ["queue", "actor", "reason"])
        self.exceptions = counter(f"{prefix}_actor_exceptions", "Failed actor runs by type.",
                                  ["queue", "actor", "exception_type"])
        self.in_progress = gauge(f"{prefix}_messages_in_progress", "Actor runs going on now.",
                                 ["queue", "actor"])
        self.duration = histogram(f"{prefix}_message_processing_duration_seconds",
                                  "Actor run time.", ["queue", "actor"], PROCESSING_BUCKETS)
        self.lag = histogram(
            f"{prefix}_message_delivery_lag_seconds",
            "Time from when a message became due to when its run started.", ["queue"],
            DELIVERY_LAG_BUCKETS)
        self.call_failures = counter(
            f"{prefix}_broker_call_failures", "Broker calls that raised (a settle or a "
            "result store that failed: the message goes back to the broker).", ["call"])
        self.broker_call = histogram(
            f"{prefix}_broker_call_duration_seconds", "Broker call time (consume excluded).",
            ["call"], BROKER_CALL_BUCKETS)
        #: the values are `_fastmetrics` ones, updated in place
        self.fast = fast is not None
        if fast is not None:
            fast.register()


_SHARED: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, _Metrics]] = (
    weakref.WeakKeyDictionary())


def _metrics_for(registry: CollectorRegistry, prefix: str) -> _Metrics:
    """The metrics of `registry` under `prefix`, created once per pair (and forgotten with
    the registry)."""
    by_prefix = _SHARED.setdefault(registry, {})
    found = by_prefix.get(prefix)
    if found is None:
        found = by_prefix[prefix] = _Metrics(registry, prefix)
    return found


#: what a hook touches, by label values, one exact dict per label
#: (`tree[queue][actor]`): a hit is a plain lookup per level, done in C, with no tuple of
#: labels built or hashed per message; a miss raises KeyError, and `_bind` fills it in.
#: The keys are the app's names (queues, actors, outcomes), bounded by the app.
Tree = dict[str, Any]


def _bind(tree: Tree, make: Callable[..., Any], *path: str) -> Any:
    """What `tree` holds at `path`, made by `make(*path)` if missing."""
    for label in path[:-1]:
        tree = tree.setdefault(label, {})
    found = tree.get(path[-1])
    if found is None:
        found = tree[path[-1]] = make(*path)
    return found


class _Run:
    """The label children an actor run of one (queue, actor) touches, bound once, and the
    two updates a run makes through them: one call at its start, one at its end.
    prometheus_client's children (multiprocess mode); `_FastRun` in a single process."""

    __slots__ = ("duration", "failure", "in_progress", "lag", "success")

    def __init__(self, m: _Metrics, queue: str, actor: str) -> None:
        self.lag = m.lag.labels(queue)
        self.in_progress = m.in_progress.labels(queue, actor)
        self.duration = m.duration.labels(queue, actor)
        self.success = m.runs.labels(queue, actor, "success")
        self.failure = m.runs.labels(queue, actor, "failure")

    def started(self, lag: float) -> None:
        """A run started `lag` seconds after its message became due."""
        self.lag.observe(lag)
        self.in_progress.inc()

    def finished(self, took: float, success: bool | None) -> None:
        """A run ended after `took` seconds: succeeded, failed, or (None) was cancelled."""
        self.in_progress.dec()
        self.duration.observe(took)
        if success is not None:
            (self.success if success else self.failure).inc()


class _FastRun(_Run):
    """`_Run` over `_fastmetrics` values: each update written out on the values (what their
    `observe`, `inc` and `dec` do), so a run costs two calls instead of five."""

    __slots__ = ()

    def started(self, lag: float) -> None:
        h = self.lag
        h.counts[0 if lag <= h.first else bisect_left(h.bounds, lag)] += 1
        h.sum += lag
        self.in_progress.value += 1.0

    def finished(self, took: float, success: bool | None) -> None:
        self.in_progress.value -= 1.0
        h = self.duration
        h.counts[0 if took <= h.first else bisect_left(h.bounds, took)] += 1
        h.sum += took
        if success is not None:
            (self.success if success else self.failure).value += 1.0


class _Call:
    """The label children of one broker call, bound once (failures on first failure), and
    the update a call makes through them when it ends. `_FastCall` in a single process."""

    __slots__ = ("duration", "failures", "metric", "name")

    def __init__(self, m: _Metrics, name: str) -> None:
        self.name = name
        self.metric = m
        self.duration = m.broker_call.labels(name)
        self.failures: Any = None

    def done(self, took: float, counter: Any) -> None:
        """The call succeeded after `took` seconds; add one to `counter` (if not None)."""
        self.duration.observe(took)
        if counter is not None:
            counter.inc()

    def failed(self, took: float, error: bool) -> None:
        """The call raised after `took` seconds: an error (counted), or was cancelled."""
        self.duration.observe(took)
        if error:
            if self.failures is None:
                self.failures = self.metric.call_failures.labels(self.name)
            self.failures.inc()


class _FastCall(_Call):
    """`_Call` over `_fastmetrics` values, its success written out on them."""

    __slots__ = ()

    def done(self, took: float, counter: Any) -> None:
        h = self.duration
        h.counts[0 if took <= h.first else bisect_left(h.bounds, took)] += 1
        h.sum += took
        if counter is not None:
            counter.value += 1.0


#: per delivery: its run failed (set only then; a successful run leaves the stash alone)
_RUN_FAILED = StashKey[bool]()


def _timed(call: str) -> Callable[[Callable[..., Any]], Callable[..., Generator[None, Any, Any]]]:
    """Turn `count(self, <the hook's arguments>)`, which picks the counter the call adds
    one to once it succeeded (None: none), into the hook's wrapper: it times the broker
    call `call` and counts its failures. `count` runs only after a call that succeeded,
    so a call that failed makes no series of its own (a queue that never accepted a
    message has no enqueued counter). The wrapper takes the hook's arguments from
    `count`'s signature (pluggy and the chains read it through `functools.wraps`), so
    every timed hook is this one generator, with nothing nested in it."""

    def decorate(count: Callable[..., Any]) -> Callable[..., Generator[None, Any, Any]]:
        @functools.wraps(count)
        def hook(self: MetricsPlugin, *args: Any) -> Generator[None, Any, Any]:
            timing = self._calls[call]
            start = time.perf_counter()
            try:
                result = yield
            except BaseException as exc:
                timing.failed(time.perf_counter() - start, isinstance(exc, Exception))
                raise
            took = time.perf_counter() - start
            timing.done(took, count(self, *args))
            return result

        marked: Callable[..., Generator[None, Any, Any]] = hookimpl(wrapper=True)(hook)
        return marked

    return decorate


def _timing_only(call: str) -> Callable[..., Generator[None, Any, Any]]:
    """The hook of broker call `call` that times it and counts nothing more."""

    def count(self: MetricsPlugin) -> None:
        return None

    count.__name__ = count.__qualname__ = f"repid_{call}"
    count.__doc__ = f"Time `{call}` calls."
    return _timed(call)(count)


class MetricsPlugin:
    """repid plugin counting and timing messages, actor runs and broker calls."""

    def __init__(self, registry: CollectorRegistry | None = None, prefix: str = "repid") -> None:
        """`registry` defaults to prometheus_client's global REGISTRY; `prefix` starts every
        metric name."""
        from prometheus_client import REGISTRY

        self.registry: CollectorRegistry = REGISTRY if registry is None else registry
        self.prefix = prefix
        m = self._m = _metrics_for(self.registry, prefix)
        # what the hooks touch, bound on first use and kept (see `Tree`)
        self._run_type = _FastRun if m.fast else _Run
        call_type = _FastCall if m.fast else _Call
        self._calls = {name: call_type(m, name) for name in (
            "enqueue", "ack", "nack", "reject", "requeue", "queue_declare", "queue_flush",
            "queue_delete", "get_bucket", "store_bucket", "delete_bucket")}
        self._runs: Tree = {}
        self._processed: Tree = {}
        self._returned: Tree = {}
        self._exceptions: Tree = {}
        self._enqueued: Tree = {}

    # --- producer side ---

    @_timed("enqueue")
    def repid_enqueue(self, queue: str) -> Any:
        """Count accepted messages and time the call."""
        try:
            return self._enqueued[queue]
        except KeyError:
            return _bind(self._enqueued, self._m.enqueued.labels, queue)

    # --- consumer side ---

    def _new_run(self, queue: str, actor: str) -> _Run:
        """The recorder of a (queue, actor)'s runs, for this mode."""
        return self._run_type(self._m, queue, actor)

    @hookimpl(wrapper=True)
    def repid_actor_run(self, actor: Actor, key: RoutingKey, params: Parameters, stash: Stash
                        ) -> Generator[None, ActorResult, ActorResult]:
        """Observe the delivery lag, track runs in progress, time them, count runs by
        result and failures by exception type; remember a failed run in the stash (written
        only then)."""
        try:
            run = self._runs[key.queue][actor.name]
        except KeyError:
            run = _bind(self._runs, self._new_run, key.queue, actor.name)
        # one clock reading pair: the start gives the lag and starts the duration
        start = time.time()
        due: datetime = params.delay.next_execution_time or params.timestamp
        lag = start - due.timestamp()
        run.started(lag if lag > 0.0 else 0.0)
        try:
            result = yield
        except BaseException:
            took = time.time() - start
            run.finished(took if took > 0.0 else 0.0, None)
            raise
        took = time.time() - start
        run.finished(took if took > 0.0 else 0.0, result.success)  # > 0: a wall clock step
        if not result.success:
            stash[_RUN_FAILED] = True
            exc = result.exception
            kind = "unknown" if exc is None else error_type(exc)
            _bind(self._exceptions, self._m.exceptions.labels, key.queue, actor.name,
                  kind).inc()
        return result

    # --- settles ---

    def _settled(self, tree: Tree, family: Any, key: RoutingKey, label: str) -> Any:
        """The child of `family` (processed or returned) for this delivery's queue, actor
        and `label` (its outcome or reason), found in `tree`."""
        try:
            return tree[key.queue][key.topic][label]
        except KeyError:
            return _bind(tree, family.labels, key.queue, key.topic, label)

    def _final(self, key: RoutingKey, outcome: str) -> Any:
        """The processed-counter child of a final outcome."""
        return self._settled(self._processed, self._m.processed, key, outcome)

    def _back(self, key: RoutingKey, reason: str) -> Any:
        """The returned-counter child of a delivery that put its message back."""
        return self._settled(self._returned, self._m.returned, key, reason)

    @_timed("ack")
    def repid_ack(self, key: RoutingKey) -> Any:
        """ack: final outcome success (`_final` written out: every message that
        succeeds comes here)."""
        try:
            return self._processed[key.queue][key.topic]["success"]
        except KeyError:
            return self._final(key, "success")

    @_timed("nack")
    def repid_nack(self, key: RoutingKey) -> Any:
        """nack: final outcome dead."""
        return self._final(key, "dead")

    @_timed("reject")
    def repid_reject(self, key: RoutingKey) -> Any:
        """reject: returned, reason `reject`."""
        return self._back(key, "reject")

    @_timed("requeue")
    def repid_requeue(self, key: RoutingKey, reason: str | None, stash: Stash) -> Any:
        """A recurring job's next run (`schedule`) is final, success or failed by its run;
        any other requeue returns the message, counted by reason."""
        if reason == "schedule":
            return self._final(key, "failed" if stash.get(_RUN_FAILED, False) else "success")
        return self._back(key, reason or "unknown")

    # broker calls that are only timed
    repid_queue_declare = _timing_only("queue_declare")
    repid_queue_flush = _timing_only("queue_flush")
    repid_queue_delete = _timing_only("queue_delete")
    repid_get_bucket = _timing_only("get_bucket")
    repid_store_bucket = _timing_only("store_bucket")
    repid_delete_bucket = _timing_only("delete_bucket")

    # --- exposition ---

    def render(self) -> tuple[str, bytes]:
        """The `/metrics` response: this registry, or the sum of every process's files in
        multiprocess mode."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if is_multiprocess():
            return render_multiprocess()
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)

    @hookimpl
    def repid_http_routes(self, worker: Worker) -> Mapping[str, Callable[[], tuple[str, bytes]]]:
        """Serve `/metrics` on the worker's health-check server."""
        return {"/metrics": self.render}
