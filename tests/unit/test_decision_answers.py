"""A decision plugin answering with a type its hook does not take
(`hookspecs.DECISION_ANSWERS`) is logged and counts as no opinion: the next plugin, or the
default policy (registered `trylast`), decides. Through a real in-memory `Worker`."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from repid import Connection, Job, MessageCategory, Router, hookimpl
from repid.data import utcnow
from repid.middleware import Middleware, hookspecs


class DelaySoon:
    @hookimpl
    def repid_retry_delay(self) -> Any:
        return "soon"


class DelayTrue:
    @hookimpl
    def repid_retry_delay(self) -> Any:
        return True  # a bool is an int, but not a number of seconds


class DelayThree:
    @hookimpl
    def repid_retry_delay(self) -> timedelta:
        return timedelta(seconds=3)


class RetryNo:
    @hookimpl
    def repid_should_retry(self) -> Any:
        return "no"


class RetryFalse:
    @hookimpl
    def repid_should_retry(self) -> bool:
        return False


async def fail_once(conn: Connection, run_worker: Any) -> None:
    """Enqueue a job with one retry whose actor fails, and let a worker run it once."""
    router = Router()

    @router.actor
    async def work() -> None:
        raise ValueError("retry me")

    await Job("work", retries=1, _connection=conn).enqueue()
    await run_worker(conn, router)


async def wait_of_delayed(conn: Connection, messages_of: Any) -> float:
    """Seconds until the one delayed message of `default` is due."""
    [delayed] = await messages_of(conn, category=MessageCategory.DELAYED)
    assert delayed.parameters.retries.already_tried == 1
    return (delayed.parameters.delay.next_execution_time - utcnow()).total_seconds()


def ignored_answer(caplog: pytest.LogCaptureFixture, plugin: str, hook: str,
                   value: object) -> logging.LogRecord:
    """The one error logged for `plugin`'s ignored answer to `hook`."""
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR
                and plugin in r.getMessage()]
    message = record.getMessage()
    assert hook in message and repr(value) in message, message
    assert hookspecs.DECISION_ANSWERS[hook].text in message, message  # what it takes
    return record


@pytest.mark.parametrize(("plugin", "value"), [(DelaySoon, "soon"), (DelayTrue, True)])
async def test_a_wrong_delay_gives_the_default_delay_and_is_logged(
        make_conn: Any, run_worker: Any, stats: Any, messages_of: Any,
        caplog: pytest.LogCaptureFixture, plugin: type, value: object) -> None:
    conn = await make_conn(plugins=(plugin(),))
    with caplog.at_level(logging.ERROR, logger="repid"):
        await fail_once(conn, run_worker)
    # retried after the default first delay (10 s), not sent down the recovery path
    assert await stats(conn) == {"ready": 0, "delayed": 1, "in_flight": 0, "dead": 0}
    assert 8 < await wait_of_delayed(conn, messages_of) <= 10
    ignored_answer(caplog, plugin.__name__, "repid_retry_delay", value)
    assert not any("recovery" in r.getMessage() for r in caplog.records)


async def test_a_wrong_should_retry_answer_is_ignored_and_the_retry_goes_ahead(
        make_conn: Any, run_worker: Any, stats: Any, messages_of: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    conn = await make_conn(plugins=(RetryNo(),))
    with caplog.at_level(logging.ERROR, logger="repid"):
        await fail_once(conn, run_worker)
    assert await stats(conn) == {"ready": 0, "delayed": 1, "in_flight": 0, "dead": 0}
    ignored_answer(caplog, "RetryNo", "repid_should_retry", "no")


async def test_after_a_wrong_delay_the_next_plugin_decides(
        make_conn: Any, run_worker: Any, stats: Any, messages_of: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    # the plugin registered last is asked first: DelaySoon, then DelayThree
    conn = await make_conn(plugins=(DelayThree(), DelaySoon()))
    with caplog.at_level(logging.ERROR, logger="repid"):
        await fail_once(conn, run_worker)
    assert await stats(conn) == {"ready": 0, "delayed": 1, "in_flight": 0, "dead": 0}
    assert 1 < await wait_of_delayed(conn, messages_of) <= 3
    ignored_answer(caplog, "DelaySoon", "repid_retry_delay", "soon")


async def test_after_a_wrong_should_retry_answer_the_next_plugin_decides(
        make_conn: Any, run_worker: Any, stats: Any, messages_of: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    conn = await make_conn(plugins=(RetryFalse(), RetryNo()))
    with caplog.at_level(logging.ERROR, logger="repid"):
        await fail_once(conn, run_worker)
    # RetryFalse's refusal decides: dead-lettered, retries left or not
    assert await stats(conn) == {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 1}
    [dead] = await messages_of(conn)
    assert dead.parameters.retries.already_tried == 0
    ignored_answer(caplog, "RetryNo", "repid_should_retry", "no")


def test_every_decision_hook_states_its_answers_in_one_table() -> None:
    assert set(hookspecs.DECISION_ANSWERS) == set(hookspecs.DECISION_HOOKS)
    delay = hookspecs.DECISION_ANSWERS["repid_retry_delay"]
    assert all(delay.accepts(v) for v in (timedelta(seconds=1), 0, 2, 1.5))
    assert not any(delay.accepts(v) for v in (True, False, "soon", "10", None))
    retry = hookspecs.DECISION_ANSWERS["repid_should_retry"]
    assert retry.accepts(True) and retry.accepts(False)
    assert not any(retry.accepts(v) for v in (0, 1, "no", None))


def test_call_first_returns_only_answers_the_hook_takes(
        caplog: pytest.LogCaptureFixture) -> None:
    middleware = Middleware()
    middleware.register(DelayTrue())
    with caplog.at_level(logging.ERROR, logger="repid"):
        assert middleware.call_first("repid_retry_delay", actor=None, key=None,
                                     params=None, exception=None, stash={}) is None
    ignored_answer(caplog, "DelayTrue", "repid_retry_delay", True)
