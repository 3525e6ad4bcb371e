"""Job: what a producer enqueues."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from random import getrandbits
from typing import TYPE_CHECKING, Any, NamedTuple, overload

from repid._validation import (
    check_cron,
    check_datetime,
    check_duration,
    check_headers,
    check_id,
    check_name,
)
from repid.app import Repid, resolve_connection
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
from repid.data.parameters import NO_DELAY
from repid.queue import Queue
from repid.schedule import first_run
from repid.serializer import ARGS_BUCKET_MARKER, encode_args

if TYPE_CHECKING:
    from repid.connection import Connection


def new_id() -> str:
    """A random 32-hex-digit id (128 bits from `random`, which re-seeds itself from the
    OS in a forked child, so processes never share a sequence)."""
    return f"{getrandbits(128):032x}"


@functools.lru_cache(maxsize=64)
def _first_try(retries: int) -> RetriesProperties:
    """The retries of a job's first run (immutable: shared by the jobs that allow as many
    retries)."""
    return RetriesProperties(retries, 0)


class _DrawnId:
    """A `Job` attribute holding an id: the one set (given to the constructor), else random
    hex drawn when first read and kept."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = f"_{name}"

    @overload
    def __get__(self, job: None, owner: type) -> _DrawnId: ...

    @overload
    def __get__(self, job: Job, owner: type | None = None) -> str: ...

    def __get__(self, job: Job | None, owner: type | None = None) -> str | _DrawnId:
        if job is None:
            return self  # read on the class (help(), documentation tools)
        found: str | None = getattr(job, self._slot)
        if found is None:
            found = new_id()
            setattr(job, self._slot, found)
        return found

    def __set__(self, job: Job, value: str | None) -> None:
        setattr(job, self._slot, value)


class Enqueued(NamedTuple):
    """What `await job.enqueue()` returns, as in repid 1.x: `key, args, params = ...`.

    `args` is the arguments string that was sent (the JSON-encoded arguments, the
    reference to their args bucket, or "" when there are none). The key's fields are
    readable here too (`(await job.enqueue()).id_`)."""

    key: RoutingKey
    args: str
    params: Parameters

    @property
    def id_(self) -> str:
        return self.key.id_

    @property
    def topic(self) -> str:
        return self.key.topic

    @property
    def queue(self) -> str:
        return self.key.queue

    @property
    def priority(self) -> int:
        return self.key.priority


class Job:
    """A job to run: which actor (`name`), in which queue, with what arguments, when, and
    what to do with the result. Build it once, `await job.enqueue()` as often as needed.

    As in repid 1.x, `job.queue` is a `Queue` (`queue=` takes a name or a `Queue`), and
    `use_args_bucketer` and `store_result` are resolved from the connection once it is
    known (at construction when one is passed or bound by magic, else at first use):
    True when an args / results bucket broker is configured, unless given. `args_id` and
    `result_id` are random hex unless given. A job with `args_id=` and no `args=` refers
    to an existing bucket (e.g. another job's result): the worker reads its arguments
    from there.
    """

    def __init__(
        self,
        name: str,
        queue: str | Queue = "default",
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
        self.queue = queue if isinstance(queue, Queue) else Queue(queue, _connection)
        self.priority = priority if type(priority) is PrioritiesT else PrioritiesT(priority)
        self.id_ = None if id_ is None else check_id(id_, "job id_")
        if cron is not None and deferred_by is not None:
            raise ValueError("a job takes `cron` or `deferred_by`, not both: pick one schedule")
        self.deferred_until = deferred_until  # as given; `_first_at` is the aware moment
        self._first_at = check_datetime(deferred_until, "deferred_until")
        self.deferred_by = check_duration(deferred_by, "deferred_by")
        self.cron = None if cron is None else check_cron(cron)
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ValueError(f"retries is {retries!r}; it must be a whole number >= 0")
        self.retries = retries
        self.timeout: timedelta = check_duration(timeout, "timeout")  # type: ignore[assignment]
        if self.timeout is None:
            raise ValueError("timeout is required: give a timedelta of at least 1 second")
        self.ttl = check_duration(ttl, "ttl")
        #: the arguments refer to an existing bucket: sent as a reference, nothing stored
        self._args_by_reference = args_id is not None and args is None
        # the slots `args_id` and `result_id` read (`_DrawnId`), set without a call
        self._args_id = None if args_id is None else check_id(args_id, "args_id")
        self.args_ttl = check_duration(args_ttl, "args_ttl")
        self.args = args
        self.use_args_bucketer = use_args_bucketer
        self._result_id = check_id(result_id, "result_id") if result_id else None
        self.result_ttl = check_duration(result_ttl, "result_ttl")
        self.store_result = store_result
        self.headers = check_headers(headers)
        self._connection = _connection
        self._payload = "" if args is None else encode_args(args)
        self._resolved: Connection | None = None
        self._retries_props = _first_try(retries)
        self._result_props: ResultProperties | None = None
        self._result_missing = False
        known = _connection if _connection is not None else Repid.get_magic_connection()
        if known is not None:
            self._resolve(known)

    def __repr__(self) -> str:
        return f"Job(name={self.name!r}, queue={self.queue.name!r}, id_={self.id_!r})"

    #: the bucket ids: the ones given, else random hex drawn when first read (most jobs
    #: use neither bucket), the same on every read
    args_id = _DrawnId()
    result_id = _DrawnId()

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
        return self._first_at is not None and self._first_at <= utcnow()

    @property
    def connection(self) -> Connection:
        return resolve_connection(self._connection, "Job")

    def _resolve(self, connection: Connection) -> None:
        """Resolve `use_args_bucketer` and `store_result` against `connection`'s bucket
        brokers (explicit values are kept), and build the parts of the message that are
        the same for every enqueue on it. Asking for a missing broker fails at enqueue."""
        self._resolved = connection
        if self.use_args_bucketer is None:
            self.use_args_bucketer = connection.args_bucket_broker is not None
        if self.store_result is None:
            self.store_result = connection.results_bucket_broker is not None
        #: refused at enqueue (`_params`), not here: the job may be built early
        self._result_missing = bool(self.store_result) and \
            connection.results_bucket_broker is None
        self._result_props = (ResultProperties(self.result_id, self.result_ttl)
                              if self.store_result else None)

    def _params(self, connection: Connection) -> Parameters:
        """The parameters of one enqueue; what does not change between enqueues is built
        once per connection (`_resolve`)."""
        if self._result_missing:
            raise ValueError("store_result=True needs a results bucket broker: pass "
                             "Connection(..., results_bucket_broker=...)")
        delay = NO_DELAY
        if self.is_deferred:
            delay = DelayProperties(self._first_at, self.deferred_by, self.cron)
            first = first_run(delay)
            # a periodic job's schedule is anchored at its first run
            anchor = first if self.deferred_by is not None else self._first_at
            delay = DelayProperties(anchor, delay.defer_by, delay.cron, first)
        return Parameters(self.timeout, self._retries_props, self._result_props, delay,
                          utcnow(), self.ttl, dict(self.headers))

    async def enqueue(self) -> Enqueued:
        """Send the job; returns `(key, args, params)` (see `Enqueued`). Raises if the
        broker does not confirm it, or if the queue was never declared."""
        connection = self.connection
        key, payload, params = message = await self._message(connection)
        await connection.message_broker.enqueue(key, payload, params)
        return Enqueued(*message)

    async def _message(self, connection: Connection) -> tuple[RoutingKey, str, Parameters]:
        """The message to send; stores the arguments in the args bucket if asked to."""
        if connection is not self._resolved:
            self._resolve(connection)
        payload = self._payload
        if self.use_args_bucketer and (self._args_by_reference or self.args is not None):
            bucketer = connection.args_bucket_broker
            if bucketer is None:
                raise ValueError("use_args_bucketer=True needs an args bucket broker: pass "
                                 "Connection(..., args_bucket_broker=...)")
            if not self._args_by_reference:
                await bucketer.store_bucket(self.args_id,
                                            ArgsBucket(payload, ttl=self.args_ttl))
            payload = json.dumps({ARGS_BUCKET_MARKER: self.args_id})
        key = RoutingKey(self.id_ or new_id(), self.name, self.queue.name, int(self.priority))
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
