"""No secret in a repr, a log line or an error: DSN credentials are masked, and argument
errors name arguments and types but never their values."""

from __future__ import annotations

import logging

import pytest

from repid import Connection, Job, MessageCategory, Router
from repid._validation import check_datetime, check_duration
from repid.brokers._dsn import dsn_secrets, mask_dsn
from repid.converter import ArgumentsError, DefaultConverter

SECRET = "sk-live-5ecr3t-VALUE"


@pytest.mark.parametrize(("dsn", "masked"), [
    (f"redis://user:{SECRET}@host:6379/0", "redis://user:***@host:6379/0"),
    (f"redis://:{SECRET}@host/0", "redis://:***@host/0"),
    (f"amqp://guest:{SECRET}@rabbit/vh?heartbeat=5", "amqp://guest:***@rabbit/vh?heartbeat=5"),
    (f"redis://host/0?password={SECRET}&db=1", "redis://host/0?password=***&db=1"),
    (f"redis://host/0?PASSWD={SECRET}", "redis://host/0?PASSWD=***"),
    (f"amqp://h/?pwd={SECRET};x=1", "amqp://h/?pwd=***;x=1"),
    (f"rediss://h/0?ssl_password={SECRET}&Token={SECRET}",
     "rediss://h/0?ssl_password=***&Token=***"),
    (f"amqp://h/?client_secret={SECRET}&api-key={SECRET}&auth_token={SECRET}",
     "amqp://h/?client_secret=***&api-key=***&auth_token=***"),
    (f"amqp://u:{SECRET}@h/?password={SECRET}", "amqp://u:***@h/?password=***"),
    (f"redis://h/0#password={SECRET}", "redis://h/0#password=***"),
    ("memory://", "memory://"),
    ("redis://127.0.0.1:6379/0?db=2", "redis://127.0.0.1:6379/0?db=2"),
    (f"redis://[::1:{SECRET}@host/", "<unparseable dsn>"),
])
def test_mask_dsn(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked
    assert SECRET not in mask_dsn(dsn)


def test_dsn_secrets_lists_every_credential_raw_and_decoded() -> None:
    assert dsn_secrets("amqp://u:p%40ss@h/?token=a%2Fb&db=1&Secret=zz") == {
        "p%40ss", "p@ss", "a%2Fb", "a/b", "zz"}
    assert dsn_secrets("memory://") == set()
    assert dsn_secrets("redis://[::1:x@host/") == set()


def test_a_password_with_an_at_sign_is_masked_whole() -> None:
    assert mask_dsn("amqp://u:p@ss@host/") == "amqp://u:***@host/"


def test_broker_reprs_mask_query_credentials() -> None:
    from repid.brokers.rabbitmq import RabbitMessageBroker
    from repid.brokers.redis import RedisMessageBroker

    brokers = [RedisMessageBroker(dsn=f"redis://h/0?password={SECRET}"),
               RabbitMessageBroker(f"amqp://u:{SECRET}@h/?token={SECRET}",
                                   management_url=f"http://u:{SECRET}@h:15672")]
    for broker in brokers:
        assert SECRET not in repr(broker)
        assert "***" in repr(broker)


def secret_fn(count: int, token: str, ratio: float = 1.0) -> None: ...


def test_argument_errors_never_show_values() -> None:
    converter = DefaultConverter(secret_fn)
    with pytest.raises(ArgumentsError) as caught:
        converter.convert_inputs(f'{{"count": "{SECRET}", "token": 7, "ratio": "{SECRET}"}}')
    text = str(caught.value)
    assert SECRET not in text and "7" not in text.replace("secret_fn", "")
    assert "'count' (given str)" in text and "valid integer" in text
    assert "'token' (given int)" in text and "'ratio' (given str)" in text
    # the pydantic error (which quotes the value) is not chained for a traceback to print
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_signature_errors_name_arguments_only(caplog: pytest.LogCaptureFixture) -> None:
    converter = DefaultConverter(secret_fn)
    with pytest.raises(ArgumentsError) as missing:
        converter.convert_inputs(f'{{"count": 1, "password": "{SECRET}"}}')
    assert SECRET not in str(missing.value) and "token" in str(missing.value)
    # an unknown argument is ignored (as in repid 1.x); the debug log names it, no value
    with caplog.at_level(logging.DEBUG, logger="repid"):
        converter.convert_inputs(f'{{"count": 1, "token": "t", "password": "{SECRET}"}}')
    assert SECRET not in caplog.text and "'password'" in caplog.text


def test_validation_type_errors_name_the_type_only() -> None:
    with pytest.raises(TypeError, match="not a str") as duration:
        check_duration(SECRET, "timeout")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a str") as moment:
        check_datetime(SECRET, "deferred_until")  # type: ignore[arg-type]
    assert SECRET not in str(duration.value) + str(moment.value)


async def test_a_job_with_bad_arguments_is_dead_and_no_log_shows_the_value(
        conn: Connection, run_worker, messages_of, caplog: pytest.LogCaptureFixture) -> None:
    router = Router()

    @router.actor
    async def charge(amount: int, card: str) -> None: ...

    await Job("charge", args={"amount": SECRET, "card": "x"}, _connection=conn).enqueue()
    with caplog.at_level(logging.DEBUG):
        await run_worker(conn, router)
    dead = await messages_of(conn, "default", MessageCategory.DEAD)
    assert len(dead) == 1
    assert "'amount' (given str)" in caplog.text  # the reason is logged...
    assert SECRET not in caplog.text  # ...without the value, also in tracebacks
    reason = " ".join(str(v) for v in dead[0].parameters.headers.values())
    assert SECRET not in reason


def test_cli_scrub_masks_query_string_credentials() -> None:
    from repid.cli._loading import scrub

    env = {"REPID_BROKER_DSN": "redis://127.0.0.1:6379/0?password=hunter2-secret&db=1"}
    text = scrub("connect failed: password=hunter2-secret rejected (hunter2-secret)", env)
    assert "hunter2-secret" not in text and "***" in text
