"""Job: what a producer enqueues."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from repid.data import (
    ArgsBucket,
    DelayProperties,
    Parameters,
    PrioritiesT,
    ResultBucket,
    ResultProperties,
    RetriesProperties,
    RoutingKey,
    utcnow,
)
from repid.main import resolve_connection
from repid.schedule import first_run
from repid.serializer import ARGS_BUCKET_MARKER, encode_args
from repid.validation import (
    check_cron,
    check_datetime,
    check_duration,
    check_headers,
    check_name,
)

if TYPE_CHECKING:
    from repid.connection import Connection


def new_id() -> str:
    """A random 32-hex-digit id."""
    return os.urandom(16).hex()


class Job:
    """A job to run: which actor (`name`), in which queue, with what arguments, when, and
    what to do with the result. Build it once, `await job.enqueue()` as often as needed."""

    def __init__(
        self,
        name: str,
        queue: str = "default",
        priority: PrioritiesT | int = PrioritiesT.MEDIUM,
        id_: str | None = None,
        deferred_until: datetime | int | float | None = None,
        deferred_by: timedelta | int | float | None = None,
        cron: str | None = None,
        retries: int = 0,
        timeout: timedelta | int | float = timedelta(minutes=10),
        ttl: timedelta | int | float | None = None,
        args_id: str | None = None,
        args_ttl: timedelta | int | float | None = None,
        args: Any = None,
        use_args_bucketer: bool | None = None,
        result_id: str | None = None,
        result_ttl: timedelta | int | float | None = timedelta(days=1),
        store_result: bool | None = None,
        headers: dict[str, str] | None = None,
        _connection: Connection | None = None,
    ) -> None:
        self.name = check_name(name, "job name")
        self.queue = check_name(queue, "queue name")
        self.priority = PrioritiesT(priority)
        self.id_ = None if id_ is None else check_name(id_, "job id_")
        if cron is not None and deferred_by is not None:
            raise ValueError("a job takes `cron` or `deferred_by`, not both: pick one schedule")
        self.deferred_until = check_datetime(deferred_until, "deferred_until")
        self.deferred_by = check_duration(deferred_by, "deferred_by")
        self.cron = None if cron is None else check_cron(cron)
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ValueError(f"retries is {retries!r}; it must be a whole number >= 0")
        self.retries = retries
        self.timeout: timedelta = check_duration(timeout, "timeout")  # type: ignore[assignment]
        if self.timeout is None:
            raise ValueError("timeout is required: give a timedelta of at least 1 second")
        self.ttl = check_duration(ttl, "ttl")
        self.args_id = None if args_id is None else check_name(args_id, "args_id")
        self.args_ttl = check_duration(args_ttl, "args_ttl")
        self.args = args
        self.use_args_bucketer = use_args_bucketer
        self.result_id = check_name(result_id, "result_id") if result_id else new_id()
        self.result_ttl = check_duration(result_ttl, "result_ttl")
        self.store_result = store_result
        self.headers = check_headers(headers)
        self._connection = _connection
        self._payload: str | None = None if args is not None else ""
        if args is not None:
            self._payload = encode_args(args)

    def __repr__(self) -> str:
        return f"Job(name={self.name!r}, queue={self.queue!r}, id_={self.id_!r})"

    @property
    def is_deferred(self) -> bool:
        """True when the job does not run at once: delayed, periodic, or cron."""
        return (self.deferred_until is not None or self.deferred_by is not None
                or self.cron is not None)

    @property
    def is_unique(self) -> bool:
        """True when the job has its own `id_`: brokers that deduplicate keep one copy."""
        return self.id_ is not None

    @property
    def is_overdue(self) -> bool:
        """True when `deferred_until` has already passed: the job would run at once."""
        return self.deferred_until is not None and self.deferred_until <= utcnow()

    @property
    def connection(self) -> Connection:
        return resolve_connection(self._connection, "Job")

    def _wants_result(self, connection: Connection) -> bool:
        if self.store_result is None:
            return connection.results_bucket_broker is not None
        if self.store_result and connection.results_bucket_broker is None:
            raise ValueError("store_result=True needs a results bucket broker: pass "
                             "Connection(..., results_bucket_broker=...)")
        return self.store_result

    def _params(self, connection: Connection) -> Parameters:
        delay = DelayProperties(self.deferred_until, self.deferred_by, self.cron)
        if self.is_deferred:
            first = first_run(delay)
            # a periodic job's schedule is anchored at its first run
            anchor = first if self.deferred_by is not None else self.deferred_until
            delay = DelayProperties(anchor, delay.defer_by, delay.cron, first)
        return Parameters(
            execution_timeout=self.timeout,
            retries=RetriesProperties(self.retries, 0),
            result=ResultProperties(self.result_id, self.result_ttl)
            if self._wants_result(connection) else None,
            delay=delay,
            ttl=self.ttl,
            headers=dict(self.headers),
        )

    async def enqueue(self) -> RoutingKey:
        """Send the job; returns the message's key. Raises if the broker does not confirm
        it, or if the queue was never declared."""
        connection = self.connection
        key, payload, params = await self._message(connection)
        await connection.message_broker.enqueue(key, payload, params)
        return key

    async def _message(self, connection: Connection) -> tuple[RoutingKey, str, Parameters]:
        """The message to send; stores the arguments in the args bucket if asked to."""
        payload = self._payload or ""
        bucketer = connection.args_bucket_broker
        use_bucket = self.use_args_bucketer
        if use_bucket is None:
            use_bucket = bucketer is not None and self.args is not None
        if use_bucket:
            if bucketer is None:
                raise ValueError("use_args_bucketer=True needs an args bucket broker: pass "
                                 "Connection(..., args_bucket_broker=...)")
            args_id = self.args_id or new_id()
            await bucketer.store_bucket(args_id, ArgsBucket(payload, ttl=self.args_ttl))
            payload = json.dumps({ARGS_BUCKET_MARKER: args_id})
        key = RoutingKey(self.id_ or new_id(), self.name, self.queue, int(self.priority))
        return key, payload, self._params(connection)

    @property
    async def result(self) -> ResultBucket | None:
        """The stored result of the latest run, or None (not run yet, not stored, expired)."""
        broker = self.connection.results_bucket_broker
        if broker is None:
            return None
        bucket = await broker.get_bucket(self.result_id)
        return bucket if isinstance(bucket, ResultBucket) else None


async def enqueue_many(jobs: Iterable[Job]) -> list[RoutingKey]:
    """Send many jobs at once; brokers that can (RabbitMQ) confirm them in one round.

    All jobs go through the first job's connection. Returns their keys in order.
    """
    jobs = list(jobs)
    if not jobs:
        return []
    connection = jobs[0].connection
    messages = [await job._message(connection) for job in jobs]
    await connection.message_broker.enqueue_many(messages)
    return [key for key, _, _ in messages]
