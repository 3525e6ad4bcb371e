"""Run it with: pytest examples/testing/test_app.py

Testing a repid app with the pytest plugin (installed with repid, no broker needed).

`pytest.mark.repid.with_args(routers=[router])` gives each test an in-memory app: a job
that is ready at once runs inside its `await job.enqueue()`, through a mock that still
calls the real actor; a job deferred to later stays in its in-memory queue.
"""

from __future__ import annotations

import pytest
from testing_app import USERS, router

from repid import GetEventLogT, GetInMemoryQueueT, GetMockedActorT, Job

pytestmark = pytest.mark.repid.with_args(routers=[router])


async def test_signup_runs_at_once(repid_get_mocked_actor: GetMockedActorT) -> None:
    await Job("signup", queue="accounts",
              args={"email": "ada@example.com", "name": "Ada"}).enqueue()

    repid_get_mocked_actor("signup").assert_called_once_with(email="ada@example.com",
                                                            name="Ada")
    assert USERS["ada@example.com"] == "Ada"


async def test_welcome_email_waits_an_hour(
        repid_get_mocked_actor: GetMockedActorT,
        repid_get_in_memory_queue: GetInMemoryQueueT) -> None:
    await Job("signup", queue="accounts",
              args={"email": "grace@example.com", "name": "Grace"}).enqueue()

    repid_get_mocked_actor("send_welcome_email").assert_not_called()
    emails = repid_get_in_memory_queue("emails")
    assert emails is not None and len(emails.delayed) == 1


async def test_event_log_shows_the_broker_calls(repid_get_event_log: GetEventLogT) -> None:
    await Job("send_welcome_email", queue="emails", args={"email": "x@example.com"}).enqueue()

    calls = [event.function for event in repid_get_event_log()]
    # the test app has an args bucket broker: the arguments are stored, then the message
    # is sent, taken, run and acked
    assert calls.index("store_bucket") < calls.index("enqueue") < calls.index("ack")
