"""Job: parameters, validation, enqueueing, args (inline and bucketed), results,
priorities and headers, on the in-memory brokers with a real Worker."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest

from repid import (
    ArgsBucket,
    Connection,
    InMemoryMessageBroker,
    Job,
    MessageDependency,
    PrioritiesT,
    QueueNotDeclaredError,
    Router,
)
from repid.data import utcnow

# --- validation ------------------------------------------------------------------------


_BAD_NAMES = ["", "a b", "a.b", "a/b", "naïve", "x:y", "a*"]
_FIELDS = [("name", "job name"), ("queue", "queue name"), ("id_", "job id_"),
           ("args_id", "args_id"), ("result_id", "result_id")]


@pytest.mark.parametrize(("field", "what", "bad"), [
    (field, what, bad) for field, what in _FIELDS for bad in _BAD_NAMES
    if not (field == "result_id" and bad == "")  # an empty result_id means: generate one
])
def test_names_and_ids_allow_only_letters_digits_dash_underscore(
        field: str, what: str, bad: str) -> None:
    kwargs = {"name": "ok"}
    kwargs[field] = bad
    with pytest.raises(ValueError) as info:
        Job(**kwargs)  # type: ignore[arg-type]
    text = str(info.value)
    assert what in text and repr(bad) in text
    assert "letters, digits" in text


def test_valid_names_and_ids_are_kept() -> None:
    job = Job("Some_name-1", queue="q-2_B", id_="ID_1-x", args_id="a-1", result_id="r_1")
    assert (job.name, job.queue.name, job.id_, job.args_id, job.result_id) == (
        "Some_name-1", "q-2_B", "ID_1-x", "a-1", "r_1")


def test_cron_with_deferred_by_is_rejected() -> None:
    with pytest.raises(ValueError, match="`cron` or `deferred_by`, not both"):
        Job("x", cron="* * * * *", deferred_by=60)


def test_invalid_cron_is_rejected_with_example() -> None:
    with pytest.raises(ValueError, match="cron expression 'every day' is invalid"):
        Job("x", cron="every day")


@pytest.mark.parametrize("field", ["deferred_by", "timeout", "ttl", "args_ttl", "result_ttl"])
@pytest.mark.parametrize("value", [0.5, timedelta(milliseconds=999), 0, -3])
def test_durations_under_one_second_are_rejected(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^{field} is .* it must be at least 1 second"):
        Job("x", **{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["deferred_by", "timeout", "ttl"])
def test_durations_of_wrong_type_are_rejected(field: str) -> None:
    with pytest.raises(TypeError, match=f"{field} must be a timedelta or a number"):
        Job("x", **{field: "10"})  # type: ignore[arg-type]


def test_durations_in_seconds_become_timedeltas() -> None:
    job = Job("x", deferred_by=2, timeout=1, ttl=1.5, args_ttl=3, result_ttl=60)
    assert job.deferred_by == timedelta(seconds=2)
    assert job.timeout == timedelta(seconds=1)
    assert job.ttl == timedelta(seconds=1.5)
    assert job.args_ttl == timedelta(seconds=3)
    assert job.result_ttl == timedelta(minutes=1)


@pytest.mark.parametrize("retries", [-1, 1.5, True, "2"])
def test_bad_retries_are_rejected(retries: object) -> None:
    with pytest.raises(ValueError, match=r"retries is .* whole number >= 0"):
        Job("x", retries=retries)  # type: ignore[arg-type]


def test_headers_must_be_str_to_str() -> None:
    with pytest.raises(TypeError, match="headers must be a dict of str to str"):
        Job("x", headers={"n": 1})  # type: ignore[dict-item]


def test_args_must_be_a_mapping_or_list() -> None:
    with pytest.raises(TypeError, match="job args must be a dict"):
        Job("x", args=42)


def test_defaults_match_spec() -> None:
    job = Job("x")
    assert job.queue.name == "default"
    assert job.priority is PrioritiesT.MEDIUM
    assert job.id_ is None and job.retries == 0
    assert job.timeout == timedelta(minutes=10)
    assert job.ttl is None and job.args is None and job.args_ttl is None
    assert job.result_ttl == timedelta(days=1)
    assert job.store_result is None and job.use_args_bucketer is None
    assert job.headers == {}
    assert len(job.result_id) == 32 and Job("x").result_id != job.result_id


async def test_bucket_ids_are_drawn_once_when_first_needed(make_conn) -> None:  # type: ignore[no-untyped-def]
    """`args_id` and `result_id` are drawn when first read (by the user or by an enqueue
    that needs them) and never again: the ids the buckets use are the ones the job shows."""
    job = Job("x")
    drawn = (job.args_id, job.result_id)
    assert (job.args_id, job.result_id) == drawn and drawn[0] != drawn[1]
    job.result_id = "mine"
    assert job.result_id == "mine"

    conn = await make_conn(args=True)
    unread = Job("echo", args={"text": "hi"}, _connection=conn)
    _, payload, params = await unread.enqueue()
    assert json.loads(payload) == {"$repid_args_bucket": unread.args_id}
    assert params.result is not None and params.result.id_ == unread.result_id
    assert await conn.args_bucket_broker.get_bucket(unread.args_id) is not None  # type: ignore[union-attr]
    again = await unread.enqueue()  # the same job sent again keeps its bucket ids
    assert again.args == payload and again.params.result == params.result


def test_bucket_ids_read_on_the_class_describe_themselves() -> None:
    """Documentation tools and help() read `Job.args_id` on the class: no id is drawn."""
    assert "drawn when first read" in (Job.args_id.__doc__ or "")
    assert Job.result_id is not Job.args_id


def test_priority_accepts_int() -> None:
    assert Job("x", priority=2).priority is PrioritiesT.HIGH
    with pytest.raises(ValueError):
        Job("x", priority=7)


# --- properties ------------------------------------------------------------------------


def test_is_deferred() -> None:
    assert not Job("x").is_deferred
    assert Job("x", deferred_until=utcnow() + timedelta(hours=1)).is_deferred
    assert Job("x", deferred_by=60).is_deferred
    assert Job("x", cron="*/5 * * * *").is_deferred


def test_is_unique() -> None:
    assert not Job("x").is_unique
    assert Job("x", id_="only-one").is_unique


def test_is_overdue() -> None:
    assert not Job("x").is_overdue
    assert Job("x", deferred_until=utcnow() - timedelta(seconds=5)).is_overdue
    assert not Job("x", deferred_until=utcnow() + timedelta(hours=1)).is_overdue


def test_deferred_until_is_kept_as_given_and_read_as_local_time() -> None:
    naive = datetime(2030, 1, 2, 3, 4, 5)
    job = Job("x", deferred_until=naive)
    assert job.deferred_until is naive  # as in repid 1.x: exactly the value passed
    assert job._params(Connection(InMemoryMessageBroker())).delay.delay_until == \
        naive.astimezone(timezone.utc)  # as in 1.x, naive is local (tests/v1/test_time_v1.py)
    assert Job("x", deferred_until=0)._params(
        Connection(InMemoryMessageBroker())).delay.delay_until == \
        datetime(1970, 1, 1, tzinfo=timezone.utc)


# --- enqueue -----------------------------------------------------------------------------


async def test_enqueue_to_undeclared_queue_raises_key_error_naming_queue(
        conn: Connection) -> None:
    conn.message_broker.require_declared_queues = True
    with pytest.raises(KeyError) as info:
        await Job("x", queue="nowhere", _connection=conn).enqueue()
    assert isinstance(info.value, QueueNotDeclaredError)
    assert info.value.queue == "nowhere"
    text = str(info.value)
    assert "'nowhere'" in text and "declare" in text.lower()


async def test_enqueue_to_undeclared_queue_declares_it_by_default(conn: Connection,
                                                                 stats) -> None:
    await Job("x", queue="fresh", _connection=conn).enqueue()
    assert (await stats(conn, "fresh"))["ready"] == 1


async def test_enqueue_returns_the_key_and_stores_the_message(conn: Connection,
                                                             messages_of, stats) -> None:
    job = Job("add", id_="job-1", priority=PrioritiesT.HIGH, retries=3, timeout=30, ttl=60,
              args={"a": 1, "b": 2}, headers={"tenant": "acme"}, _connection=conn)
    key, _, _ = await job.enqueue()
    assert (key.id_, key.topic, key.queue, key.priority) == ("job-1", "add", "default", 2)
    assert (await stats(conn))["ready"] == 1
    stored = next(conn.message_broker.queues["default"].simple.items())  # type: ignore
    assert json.loads(stored.payload) == {"a": 1, "b": 2}
    p = stored.params
    assert p.retries.max_amount == 3 and p.retries.already_tried == 0
    assert p.execution_timeout == timedelta(seconds=30)
    assert p.ttl == timedelta(seconds=60)
    assert p.headers == {"tenant": "acme"}
    assert p.result is not None and p.result.id_ == job.result_id
    assert p.result.ttl == timedelta(days=1)
    assert p.delay.next_execution_time is None


async def test_deferred_until_lands_in_the_delayed_part(conn: Connection, stats) -> None:
    when = utcnow() + timedelta(hours=1)
    await Job("x", deferred_until=when, _connection=conn).enqueue()
    assert await stats(conn) == {"ready": 0, "delayed": 1, "in_flight": 0, "dead": 0}


async def test_store_result_default_follows_results_broker(make_conn) -> None:
    with_results = await make_conn()
    without = await make_conn(results=False)
    await Job("x", _connection=with_results).enqueue()
    await Job("x", _connection=without).enqueue()
    await Job("x", store_result=False, _connection=with_results).enqueue()
    params = [m.params for c in (with_results, without)
              for m in c.message_broker.queues["default"].simple.items()]
    assert [p.result is not None for p in params] == [True, False, False]
    with pytest.raises(ValueError, match="store_result=True needs a results bucket broker"):
        await Job("x", store_result=True, _connection=without).enqueue()
    assert await Job("x", _connection=without).result is None


# --- args, results, priorities, headers through a real worker -------------------------------


async def test_inline_args_reach_actor_and_result_is_its_return_value(
        conn: Connection, run_worker) -> None:
    router = Router()

    @router.actor
    async def add(a: int, b: int) -> dict[str, object]:
        return {"sum": a + b, "items": [a, b]}

    job = Job("add", args={"a": 2, "b": 40}, _connection=conn)
    assert await job.result is None  # not run yet
    await job.enqueue()
    runner = await run_worker(conn, router)
    assert runner.processed == 1
    result = await job.result
    assert result is not None
    assert result.success is True and result.exception is None
    assert result.data == {"sum": 42, "items": [2, 40]}
    assert result.started_when <= result.finished_when
    assert result.ttl == timedelta(days=1)


async def test_args_as_list_map_by_position(conn: Connection, run_worker) -> None:
    router = Router()

    @router.actor
    def sub(a: int, b: int) -> int:
        return a - b

    job = Job("sub", args=[10, 3], _connection=conn)
    await job.enqueue()
    await run_worker(conn, router)
    assert (await job.result).data == 7  # type: ignore[union-attr]


async def test_failed_run_result_names_exception(conn: Connection, run_worker) -> None:
    router = Router()

    @router.actor
    async def fail() -> None:
        raise ValueError("bad input")

    job = Job("fail", _connection=conn)
    await job.enqueue()
    await run_worker(conn, router)
    result = await job.result
    assert result is not None
    assert result.success is False
    assert result.exception == "ValueError: bad input"
    assert result.data is None


async def test_args_go_to_args_bucket_by_default_when_configured(
        make_conn, run_worker) -> None:
    conn = await make_conn(args=True)
    router = Router()
    seen = []

    @router.actor
    def echo(text: str) -> str:
        seen.append(text)
        return text.upper()

    job = Job("echo", args={"text": "hi"}, args_id="my-args", args_ttl=60, _connection=conn)
    await job.enqueue()
    stored = next(conn.message_broker.queues["default"].simple.items())  # type: ignore
    assert json.loads(stored.payload) == {"$repid_args_bucket": "my-args"}
    bucket = await conn.args_bucket_broker.get_bucket("my-args")  # type: ignore[union-attr]
    assert isinstance(bucket, ArgsBucket)
    assert json.loads(bucket.data) == {"text": "hi"}
    assert bucket.ttl == timedelta(seconds=60)
    await run_worker(conn, router)
    assert seen == ["hi"]
    assert (await job.result).data == "HI"  # type: ignore[union-attr]


async def test_use_args_bucketer_false_keeps_args_inline(make_conn, run_worker) -> None:
    conn = await make_conn(args=True)
    router = Router()

    @router.actor
    def echo(text: str) -> str:
        return text

    job = Job("echo", args={"text": "inline"}, use_args_bucketer=False, _connection=conn)
    await job.enqueue()
    stored = next(conn.message_broker.queues["default"].simple.items())  # type: ignore
    assert json.loads(stored.payload) == {"text": "inline"}
    assert conn.args_bucket_broker.buckets == {}  # type: ignore[union-attr]
    await run_worker(conn, router)
    assert (await job.result).data == "inline"  # type: ignore[union-attr]


async def test_use_args_bucketer_true_needs_args_broker(conn: Connection) -> None:
    with pytest.raises(ValueError, match="use_args_bucketer=True needs an args bucket broker"):
        await Job("x", args={"a": 1}, use_args_bucketer=True, _connection=conn).enqueue()


async def test_missing_args_bucket_dead_letters(make_conn, run_worker, stats) -> None:
    conn = await make_conn(args=True)
    router = Router()
    ran = []

    @router.actor
    def echo(text: str) -> None:
        ran.append(text)

    await Job("echo", args={"text": "x"}, args_id="gone", _connection=conn).enqueue()
    await conn.args_bucket_broker.delete_bucket("gone")  # type: ignore[union-attr]
    await run_worker(conn, router)
    assert ran == []
    assert (await stats(conn))["dead"] == 1


async def test_high_priority_is_processed_before_low(conn: Connection, run_worker) -> None:
    router = Router()
    order: list[str] = []

    @router.actor
    async def work(tag: str) -> None:
        order.append(tag)

    for tag, prio in [("low", PrioritiesT.LOW), ("medium", PrioritiesT.MEDIUM),
                      ("high", PrioritiesT.HIGH), ("low2", PrioritiesT.LOW),
                      ("high2", PrioritiesT.HIGH)]:
        await Job("work", priority=prio, args={"tag": tag}, _connection=conn).enqueue()
    await run_worker(conn, router, messages_limit=5, tasks_limit=1)
    assert order == ["high", "high2", "medium", "low", "low2"]


async def test_headers_reach_the_actors_message(conn: Connection, run_worker) -> None:
    router = Router()
    seen = {}

    @router.actor
    async def work(msg: MessageDependency) -> None:
        seen.update(msg.parameters.headers)
        seen["_topic"] = msg.key.topic

    await Job("work", headers={"tenant": "acme", "trace": "t-1"}, _connection=conn).enqueue()
    await run_worker(conn, router)
    assert seen == {"tenant": "acme", "trace": "t-1", "_topic": "work"}


async def test_same_job_enqueued_twice_gives_two_messages(conn: Connection,
                                                         run_worker) -> None:
    router = Router()
    calls = []

    @router.actor
    async def work() -> None:
        calls.append(1)

    job = Job("work", _connection=conn)
    k1, _, _ = await job.enqueue()
    k2, _, _ = await job.enqueue()
    assert k1.id_ != k2.id_
    await asyncio.wait_for(run_worker(conn, router, messages_limit=2), 5)
    assert len(calls) == 2
