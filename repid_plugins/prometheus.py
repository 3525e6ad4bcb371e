"""Prometheus metrics for repid, served at `/metrics` by the worker's health-check server.

Register `MetricsPlugin()` on a `Connection` (the `prometheus` extra). The metrics (with the
default `prefix="repid"`):

- `repid_messages_enqueued_total{queue}`: messages the broker accepted.
- `repid_messages_processed_total{queue,actor,outcome}`, where outcome is
  - `failure`: one per failed actor run (raised or timed out), whatever happens next;
  - `success`: the message was acked (or, for a recurring job, a successful run was requeued
    for its next time);
  - `retried`: a message was requeued after a failed run (or by an eager `msg.retry()`);
  - `dead`: the message went to the dead-letter queue (nack: no retries left, expired, or
    undecodable);
  - `rejected`: the message went back to its queue unchanged (reject: shutdown, eager reject).
  So every message handled and settled ends as exactly one of success, dead or rejected; a
  retry adds one `failure` and one `retried` on the way. A settle or result store that
  failed counts in `repid_broker_call_failures_total` instead.
- `repid_actor_exceptions_total{queue,actor,exception_type}`: failed runs by exception type.
- `repid_messages_in_progress{queue,actor}`: actor runs going on now (gauge).
- `repid_message_processing_duration_seconds{queue,actor}`: actor run time (histogram).
- `repid_message_delivery_lag_seconds{queue}`: from when a message became due
  (`params.delay.next_execution_time`, else `params.timestamp`) to when a worker took it.
- `repid_broker_call_duration_seconds{call}`: each broker call (`enqueue`, `ack`,
  `store_bucket`, ...), except `consume`, whose time is mostly waiting for a message.
- `repid_broker_call_failures_total{call}`: broker calls that raised, e.g. an `ack` on a
  lost connection or a `store_bucket` while the results store is down. A message whose
  settle or result store failed is not counted in `messages_processed_total`: it goes back
  to the broker and is counted when it is handled again.

Multiprocess (`repid worker --processes N`): call `setup_multiprocess(dir)` in the supervisor
before anything imports prometheus_client, and `mark_process_dead(pid)` when a child exits;
each worker's `/metrics` then sums every process. This module imports prometheus_client only
when a `MetricsPlugin` is created, so importing it is always safe.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import weakref
from collections.abc import Callable, Generator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from repid import MessageCategory, hookimpl
from repid_plugins._common import BoundedMap, error_type

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Gauge, Histogram
    from prometheus_client.metrics import MetricWrapperBase

    from repid import Actor, ActorResult, Parameters, RoutingKey, Worker
    from repid.data import BucketT

__all__ = [
    "BROKER_CALL_BUCKETS",
    "DELIVERY_LAG_BUCKETS",
    "MULTIPROC_ENV",
    "PROCESSING_BUCKETS",
    "MetricsPlugin",
    "is_multiprocess",
    "mark_process_dead",
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

_UTC = timezone.utc

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
    """The metric objects of one (registry, prefix); shared by plugins using the same pair,
    since a registry refuses a metric name twice."""

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.enqueued = Counter(f"{prefix}_messages_enqueued", "Messages the broker accepted.",
                                ["queue"], registry=registry)
        self.processed = Counter(
            f"{prefix}_messages_processed",
            "Messages handled, by outcome: success, failure (per failed run), retried, dead, "
            "rejected.", ["queue", "actor", "outcome"], registry=registry)
        self.exceptions = Counter(f"{prefix}_actor_exceptions", "Failed actor runs by type.",
                                  ["queue", "actor", "exception_type"], registry=registry)
        self.in_progress: Gauge = Gauge(f"{prefix}_messages_in_progress",
                                        "Actor runs going on now.", ["queue", "actor"],
                                        registry=registry, multiprocess_mode="livesum")
        self.duration: Histogram = Histogram(
            f"{prefix}_message_processing_duration_seconds", "Actor run time.",
            ["queue", "actor"], registry=registry, buckets=PROCESSING_BUCKETS)
        self.lag: Histogram = Histogram(
            f"{prefix}_message_delivery_lag_seconds",
            "Time from when a message became due to when a worker took it.", ["queue"],
            registry=registry, buckets=DELIVERY_LAG_BUCKETS)
        self.call_failures = Counter(
            f"{prefix}_broker_call_failures", "Broker calls that raised (a settle or a "
            "result store that failed: the message goes back to the broker).", ["call"],
            registry=registry)
        self.broker_call: Histogram = Histogram(
            f"{prefix}_broker_call_duration_seconds", "Broker call time (consume excluded).",
            ["call"], registry=registry, buckets=BROKER_CALL_BUCKETS)


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


#: the outcome of each settle but requeue (whose outcome depends on the run before it)
_SETTLE_OUTCOME = {"ack": "success", "nack": "dead", "reject": "rejected"}


class MetricsPlugin:
    """repid plugin counting and timing messages, actor runs and broker calls."""

    def __init__(self, registry: CollectorRegistry | None = None, prefix: str = "repid") -> None:
        """`registry` defaults to prometheus_client's global REGISTRY; `prefix` starts every
        metric name."""
        from prometheus_client import REGISTRY

        self.registry: CollectorRegistry = REGISTRY if registry is None else registry
        self.prefix = prefix
        self._m = _metrics_for(self.registry, prefix)
        self._children: dict[tuple[Any, ...], Any] = {}
        # per message id run here: "running", then "ok" or "failed" until it is settled
        self._runs: BoundedMap[str, str] = BoundedMap()

    # --- cached label children (labels() takes a lock and builds a tuple each time) ---

    def _child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        """The child of `metric` for `labels`, cached."""
        cache_key = (id(metric), *labels)
        child = self._children.get(cache_key)
        if child is None:
            child = self._children[cache_key] = metric.labels(*labels)
        return child

    # --- producer side ---

    @hookimpl(wrapper=True)
    def repid_enqueue(self, queue: str) -> Generator[None, None, None]:
        """Count accepted messages and time the call."""
        start = time.perf_counter()
        try:
            result = yield
        finally:
            self._child(self._m.broker_call, "enqueue").observe(time.perf_counter() - start)
        self._child(self._m.enqueued, queue).inc()
        return result

    # --- consumer side ---

    @hookimpl(wrapper=True)
    def repid_consume(
        self, queue: str, category: MessageCategory,
    ) -> Generator[None, tuple[RoutingKey, str, Parameters], tuple[RoutingKey, str, Parameters]]:
        """Observe the delivery lag of each message a worker takes."""
        message = yield
        if category is MessageCategory.NORMAL:
            params = message[2]
            due: datetime = params.delay.next_execution_time or params.timestamp
            lag = (datetime.now(_UTC) - due).total_seconds()
            self._child(self._m.lag, queue).observe(max(lag, 0.0))
        return message

    @hookimpl(wrapper=True)
    def repid_actor_run(self, actor: Actor, key: RoutingKey) -> Generator[
            None, ActorResult, ActorResult]:
        """Track runs in progress, time them, count failures and their exception types."""
        queue, name = key.queue, actor.name
        gauge = self._child(self._m.in_progress, queue, name)
        runs, msg_id = self._runs, key.id_
        runs[msg_id] = "running"
        gauge.inc()
        start = time.perf_counter()
        try:
            result = yield
        except BaseException:
            # cancelled (shutdown past the grace time): the reject that follows is counted
            runs.pop(msg_id)
            raise
        finally:
            gauge.dec()
            self._child(self._m.duration, queue, name).observe(time.perf_counter() - start)
        if not result.success:
            self._child(self._m.processed, queue, name, "failure").inc()
            exc = result.exception
            kind = "unknown" if exc is None else error_type(exc)
            self._child(self._m.exceptions, queue, name, kind).inc()
        if msg_id in runs:  # not settled eagerly by the actor itself
            runs[msg_id] = "ok" if result.success else "failed"
        return result

    # --- settles ---

    def _outcome(self, call: str, key: RoutingKey) -> Any:
        """The processed-counter child a settle will count, decided before the call (once
        it is made, a requeued message may already be running again); None: not counted."""
        state = self._runs.pop(key.id_)
        if call == "requeue":
            if state is None:
                return None  # not run here (no actor for its topic) or sent back from the DLQ
            outcome = "success" if state == "ok" else "retried"
        else:
            outcome = _SETTLE_OUTCOME[call]
        return self._child(self._m.processed, key.queue, key.topic, outcome)

    def _timed(self, call: str, key: RoutingKey | None = None) -> Generator[None, T, T]:
        """Time one broker call; after a successful settle, count its outcome."""
        counter = None if key is None else self._outcome(call, key)
        start = time.perf_counter()
        try:
            result = yield
        except Exception:
            self._child(self._m.call_failures, call).inc()
            raise
        finally:
            self._child(self._m.broker_call, call).observe(time.perf_counter() - start)
        if counter is not None:
            counter.inc()
        return result

    @hookimpl(wrapper=True)
    def repid_ack(self, key: RoutingKey) -> Generator[None, None, None]:
        """ack: outcome success."""
        yield from self._timed("ack", key)

    @hookimpl(wrapper=True)
    def repid_nack(self, key: RoutingKey) -> Generator[None, None, None]:
        """nack: outcome dead."""
        yield from self._timed("nack", key)

    @hookimpl(wrapper=True)
    def repid_reject(self, key: RoutingKey) -> Generator[None, None, None]:
        """reject: outcome rejected."""
        yield from self._timed("reject", key)

    @hookimpl(wrapper=True)
    def repid_requeue(self, key: RoutingKey) -> Generator[None, None, None]:
        """requeue after a failed run: retried; after a successful (recurring) run: success."""
        yield from self._timed("requeue", key)

    @hookimpl(wrapper=True)
    def repid_queue_declare(self) -> Generator[None, None, None]:
        """Time queue declarations."""
        yield from self._timed("queue_declare")

    @hookimpl(wrapper=True)
    def repid_queue_flush(self) -> Generator[None, None, None]:
        """Time queue flushes."""
        yield from self._timed("queue_flush")

    @hookimpl(wrapper=True)
    def repid_queue_delete(self) -> Generator[None, None, None]:
        """Time queue deletions."""
        yield from self._timed("queue_delete")

    @hookimpl(wrapper=True)
    def repid_get_bucket(self) -> Generator[None, BucketT | None, BucketT | None]:
        """Time bucket reads."""
        return (yield from self._timed("get_bucket"))

    @hookimpl(wrapper=True)
    def repid_store_bucket(self) -> Generator[None, None, None]:
        """Time bucket stores."""
        yield from self._timed("store_bucket")

    @hookimpl(wrapper=True)
    def repid_delete_bucket(self) -> Generator[None, None, None]:
        """Time bucket deletions."""
        yield from self._timed("delete_bucket")

    # --- exposition ---

    def render(self) -> tuple[str, bytes]:
        """The `/metrics` response: this registry, or the sum of every process's files in
        multiprocess mode."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if is_multiprocess():
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return CONTENT_TYPE_LATEST, generate_latest(registry)
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)

    @hookimpl
    def repid_http_routes(self, worker: Worker) -> Mapping[str, Callable[[], tuple[str, bytes]]]:
        """Serve `/metrics` on the worker's health-check server."""
        return {"/metrics": self.render}
