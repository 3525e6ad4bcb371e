"""The one place each broker maps its client library's errors to repid's: which errors are
mapped, to which repid error, with which message, what is chained, and what passes
through untouched (the brokers' own fault tests check the same errors against real
servers)."""

from __future__ import annotations

import asyncio

import pytest
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import (
    AMQPConnectionError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    DeliveryError,
    PublishError,
)
from pamqp.commands import Basic
from pamqp.header import ContentHeader
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from repid.brokers.rabbitmq._errors import CONNECT_ERRORS, NO_ROUTE, PublishErrors, RabbitErrors
from repid.brokers.redis._errors import RedisErrors
from repid.errors import BrokerConnectionError, EnqueueNotConfirmedError, QueueNotDeclaredError

# --- Redis ---


async def _refused() -> None:
    await asyncio.sleep(0)
    raise RedisConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")


async def test_redis_connection_errors_become_the_calls_error_with_the_reason() -> None:
    with pytest.raises(EnqueueNotConfirmedError) as info, \
            RedisErrors(EnqueueNotConfirmedError,
                        "Redis did not confirm the message %r for queue %r", "m1", "q"):
        await _refused()  # an await inside: the block is sync, the code async
    assert str(info.value) == ("Redis did not confirm the message 'm1' for queue 'q': Error "
                               "111 connecting to 127.0.0.1:1. Connection refused.")
    assert isinstance(info.value.__cause__, RedisConnectionError)


@pytest.mark.parametrize("error", [RedisTimeoutError("Timeout reading from socket"),
                                   OSError(113, "No route to host")])
def test_redis_timeouts_and_os_errors_are_mapped_too(error: Exception) -> None:
    with pytest.raises(BrokerConnectionError) as info, \
            RedisErrors(BrokerConnectionError, "cannot flush queue %r", "q"):
        raise error
    assert str(info.value) == f"cannot flush queue 'q': {error}"
    assert info.value.__cause__ is error


@pytest.mark.parametrize("error", [ResponseError("WRONGTYPE Operation against a key"),
                                   ValueError("bad"), asyncio.CancelledError()])
def test_redis_other_errors_pass_through_unchanged(error: BaseException) -> None:
    with pytest.raises(type(error)) as info, \
            RedisErrors(BrokerConnectionError, "cannot flush queue %r", "q"):
        raise error
    assert info.value is error


def test_redis_message_without_arguments_is_taken_as_it_is() -> None:
    # a DSN's password may hold a '%': formatting applies only when arguments are given
    with pytest.raises(BrokerConnectionError) as info, \
            RedisErrors(BrokerConnectionError, "cannot reach Redis at redis://:%s@h"):
        raise RedisConnectionError("refused")
    assert str(info.value) == "cannot reach Redis at redis://:%s@h: refused"
    with pytest.raises(BrokerConnectionError) as info, \
            RedisErrors(BrokerConnectionError, "cannot reach Redis at %s", "redis://:%d@h"):
        raise RedisConnectionError("refused")
    assert str(info.value) == "cannot reach Redis at redis://:%d@h: refused"


def test_redis_block_that_succeeds_returns_normally() -> None:
    with RedisErrors(BrokerConnectionError, "cannot read bucket %r", "b"):
        value = 1
    assert value == 1


# --- RabbitMQ ---


def test_rabbit_lost_channel_names_the_error_type_and_what_happens_now() -> None:
    with pytest.raises(BrokerConnectionError) as info, \
            RabbitErrors(BrokerConnectionError, "could not ack message 'm1': its channel "
                         "closed", "RabbitMQ delivers it again."):
        raise ChannelInvalidStateError("amqp://guest:secret@host/ is closed")
    assert str(info.value) == ("could not ack message 'm1': its channel closed "
                               "(ChannelInvalidStateError); RabbitMQ delivers it again.")
    # the library's text (which can carry the DSN) is neither shown nor chained
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_rabbit_detail_shows_the_cleaned_text() -> None:
    with pytest.raises(BrokerConnectionError) as info, \
            RabbitErrors(BrokerConnectionError, "cannot connect to RabbitMQ at amqp://h/",
                         catch=CONNECT_ERRORS, detail=lambda t: t.replace("secret", "***")):
        raise AMQPConnectionError("refused for guest:secret")
    assert str(info.value) == ("cannot connect to RabbitMQ at amqp://h/ "
                               "(AMQPConnectionError: refused for guest:***)")
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("error", [ValueError("bad"), asyncio.CancelledError(),
                                   QueueNotDeclaredError("q")])
def test_rabbit_other_errors_pass_through_unchanged(error: BaseException) -> None:
    with pytest.raises(type(error)) as info, \
            RabbitErrors(BrokerConnectionError, "could not ack"):
        raise error
    assert info.value is error


def _publish_error(reply_code: int) -> PublishError:
    """What aiormq raises for a mandatory publish RabbitMQ returned with `reply_code`."""
    returned = Basic.Return(reply_code=reply_code, reply_text="NO_ROUTE", exchange="",
                            routing_key="q")
    message = DeliveredMessage(delivery=returned, header=ContentHeader(), body=b"",
                               channel=None)  # type: ignore[arg-type]
    return PublishError(message, returned)


@pytest.mark.parametrize(("error", "expected", "text"), [
    (ChannelNotFoundEntity("no exchange 'repid.delay'"), EnqueueNotConfirmedError,
     "RabbitMQ refused the message for queue 'q': no exchange 'repid.delay'; repid's "
     "exchanges are declared again on the next try; retry."),
    (_publish_error(313), EnqueueNotConfirmedError,
     "RabbitMQ returned the message for queue 'q': Message delivery failed: "
     "Basic.Return(reply_code=313"),
    (DeliveryError(None, Basic.Nack()), EnqueueNotConfirmedError,
     "RabbitMQ refused to store the message for queue 'q': "),
    (asyncio.TimeoutError(), EnqueueNotConfirmedError,
     "RabbitMQ did not confirm the message for queue 'q' within 2.5 s; it may or may not "
     "be stored"),
    (RuntimeError("closed"), EnqueueNotConfirmedError,
     "lost the connection to RabbitMQ while enqueueing to 'q' (RuntimeError); it may or "
     "may not be stored. The connection is restored in the background; retry."),
    (ConnectionResetError(104, "reset"), EnqueueNotConfirmedError,
     "lost the connection to RabbitMQ while enqueueing to 'q' (ConnectionResetError)"),
])
def test_rabbit_publish_failures_say_whether_the_message_may_be_stored(
        error: Exception, expected: type[Exception], text: str) -> None:
    with pytest.raises(expected) as info, PublishErrors("q", 2.5):
        raise error
    assert str(info.value).startswith(text)
    assert info.value.__cause__ is None


def test_rabbit_unroutable_publish_is_an_undeclared_queue() -> None:
    with pytest.raises(QueueNotDeclaredError) as info, PublishErrors("q", 2.5):
        raise _publish_error(NO_ROUTE)
    assert info.value.queue == "q"


def test_rabbit_publish_passes_other_errors_through() -> None:
    error = ValueError("a bug")
    with pytest.raises(ValueError) as info, PublishErrors("q", 2.5):
        raise error
    assert info.value is error
