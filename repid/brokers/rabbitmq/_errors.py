"""aio-pika's and aiormq's errors mapped to repid's, in one place.

The RabbitMQ broker runs each call that can fail for want of RabbitMQ inside a
`RabbitErrors(...)` (a publish inside a `PublishErrors(...)`): an error of a connection or
channel that went away, or an answer RabbitMQ did not give in time, leaves the block as
the repid error that call promises (an enqueue `EnqueueNotConfirmedError` or
`QueueNotDeclaredError`, anything else `BrokerConnectionError`), with a message that says
what could not be done, which library error stopped it, and what happens now. The library
error is not chained (`from None`): its text can carry the DSN, so only its type is named,
unless the caller gives a `detail` function that cleans its text (the password masked).
Every other exception passes through unchanged, and a block that does more than map (give
a message back, mark the topology for declaring again) keeps that logic where it is.

Connecting runs inside `ConnectErrors(...)`, which names the two refusals a new user meets
first instead of the library's wording: a wrong user or password (`ACCESS_REFUSED`), and a
virtual host that does not exist or the user may not open (RabbitMQ closes the connection
instead of opening the vhost; aiormq reports it as an `InvalidFrameError` that names
neither). Each says how to fix it; neither shows the password.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from urllib.parse import unquote, urlsplit

from aiormq.exceptions import (
    AMQPError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ConnectionClosed,
    DeliveryError,
    InvalidFrameError,
    ProbableAuthenticationError,
    PublishError,
)

from repid.brokers._dsn import mask_dsn
from repid.brokers.rabbitmq._acks import CHANNEL_ERRORS
from repid.brokers.rabbitmq._management import vhost_of
from repid.errors import BrokerConnectionError, EnqueueNotConfirmedError, QueueNotDeclaredError

#: what connecting raises when RabbitMQ cannot be reached or refuses the connection
CONNECT_ERRORS: tuple[type[BaseException], ...] = (OSError, AMQPError, asyncio.TimeoutError)
#: what a publish raises when its connection or channel went away meanwhile (aiormq raises
#: a RuntimeError for a write to a closed transport)
PUBLISH_LOST_ERRORS: tuple[type[BaseException], ...] = (
    AMQPError, ChannelInvalidStateError, ConnectionError, RuntimeError)
#: AMQP reply code of a mandatory publish no queue is bound for
NO_ROUTE = 312
#: AMQP reply codes of a login refused, and of a vhost the user may not open
ACCESS_REFUSED = 403
NOT_ALLOWED = 530


class RabbitErrors:
    """A `with` block (in sync or async code) whose errors of the kinds in `catch` (by
    default a lost connection or channel) leave it as
    `error(f"{what} ({type}[: {detail(text)}])[; {then}]")`::

        with RabbitErrors(BrokerConnectionError, f"could not ack message {m!r}",
                          "RabbitMQ delivers it again"):
            await settle(message, None)
    """

    __slots__ = ("_catch", "_detail", "_error", "_then", "_what")

    def __init__(self, error: Callable[[str], Exception], what: str, then: str = "", *,
                 catch: tuple[type[BaseException], ...] = CHANNEL_ERRORS,
                 detail: Callable[[str], str] | None = None) -> None:
        self._error = error
        self._what = what
        self._then = then
        self._catch = catch
        self._detail = detail

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:
            mapped = self.map(exc)
            if mapped is not None:
                raise mapped from None

    def map(self, exc: BaseException) -> Exception | None:
        """The repid error `exc` becomes, or None when it passes through unchanged."""
        if not isinstance(exc, self._catch):
            return None
        why = type(exc).__name__
        if self._detail is not None:
            why = f"{why}: {self._detail(str(exc))}"
        then = f"; {self._then}" if self._then else ""
        return self._error(f"{self._what} ({why}){then}")


class PublishErrors(RabbitErrors):
    """`RabbitErrors` of a publish to `queue` awaiting its confirm (promise 1): what
    RabbitMQ answered instead of a confirm, and a confirm that did not come within
    `timeout` seconds, become `EnqueueNotConfirmedError` (`QueueNotDeclaredError` for a
    message no queue was bound for), saying whether the message may be stored."""

    __slots__ = ("_queue", "_timeout")

    def __init__(self, queue: str, timeout: float) -> None:
        super().__init__(
            EnqueueNotConfirmedError,
            f"lost the connection to RabbitMQ while enqueueing to {queue!r}",
            "it may or may not be stored. The connection is restored in the background; "
            "retry.", catch=PUBLISH_LOST_ERRORS)
        self._queue = queue
        self._timeout = timeout

    def map(self, exc: BaseException) -> Exception | None:
        queue = self._queue
        if isinstance(exc, ChannelNotFoundEntity):
            return EnqueueNotConfirmedError(
                f"RabbitMQ refused the message for queue {queue!r}: {exc}; repid's "
                "exchanges are declared again on the next try; retry.")
        if isinstance(exc, PublishError):
            if getattr(exc.frame, "reply_code", None) == NO_ROUTE:
                return QueueNotDeclaredError(queue)
            return EnqueueNotConfirmedError(
                f"RabbitMQ returned the message for queue {queue!r}: {exc}")
        if isinstance(exc, DeliveryError):
            return EnqueueNotConfirmedError(
                f"RabbitMQ refused to store the message for queue {queue!r}: {exc}")
        if isinstance(exc, asyncio.TimeoutError):
            return EnqueueNotConfirmedError(
                f"RabbitMQ did not confirm the message for queue {queue!r} within "
                f"{self._timeout} s; it may or may not be stored")
        return super().map(exc)


def _reply_code(exc: ConnectionClosed) -> object:
    """The AMQP reply code RabbitMQ closed the connection with (aiormq's first argument)."""
    return exc.args[0] if exc.args else None


def _refused_vhost(exc: BaseException) -> bool:
    """Whether `exc` is RabbitMQ closing the connection instead of opening its vhost."""
    if isinstance(exc, ConnectionClosed):
        return _reply_code(exc) == NOT_ALLOWED
    text = str(exc)
    return (isinstance(exc, InvalidFrameError) and "Connection.OpenOk" in text
            and "Connection.Close" in text)


class ConnectErrors(RabbitErrors):
    """`RabbitErrors` of connecting to RabbitMQ at `dsn` (raising `BrokerConnectionError`):
    a refused login and a refused vhost get messages that say so and how to fix it, and a
    connect that timed out says how long it waited."""

    __slots__ = ("_dsn", "_timeout")

    def __init__(self, dsn: str, timeout: float, detail: Callable[[str], str]) -> None:
        super().__init__(BrokerConnectionError,
                         f"cannot connect to RabbitMQ at {mask_dsn(dsn)}",
                         catch=CONNECT_ERRORS, detail=detail)
        self._dsn = dsn
        self._timeout = timeout

    def map(self, exc: BaseException) -> Exception | None:
        parts = urlsplit(self._dsn)
        user = unquote(parts.username) if parts.username else "guest"
        where = f"RabbitMQ at {mask_dsn(self._dsn)}"
        if isinstance(exc, ProbableAuthenticationError) or (
                isinstance(exc, ConnectionClosed) and _reply_code(exc) == ACCESS_REFUSED):
            return BrokerConnectionError(
                f"{where} refused the login of user {user!r}: wrong user or password "
                "(ACCESS_REFUSED). Check the user and the password in the DSN "
                "(`rabbitmqctl list_users` lists the users; `rabbitmqctl change_password "
                "USER PASSWORD` sets a password); a user other than 'guest' is needed to "
                "connect from another host than RabbitMQ's own.")
        if _refused_vhost(exc):
            vhost = vhost_of(self._dsn)
            return BrokerConnectionError(
                f"{where} refused to open virtual host {vhost!r} for user {user!r} "
                "(NOT_ALLOWED): the vhost does not exist, or the user has no access to it. "
                f"Create it with `rabbitmqctl add_vhost {vhost}` and grant access with "
                f"`rabbitmqctl set_permissions -p {vhost} {user} '.*' '.*' '.*'`, or fix "
                "the vhost in the DSN: it is the path after the host, and the default "
                "vhost '/' is written as an empty path or %2F "
                "(amqp://user:password@host:5672/ or .../%2F).")
        if isinstance(exc, asyncio.TimeoutError):
            return BrokerConnectionError(
                f"cannot connect to RabbitMQ at {mask_dsn(self._dsn)}: no answer within "
                f"{self._timeout} s (operation_timeout). Check that RabbitMQ listens at "
                "that host and port (5672 for amqp://, 5671 for amqps://).")
        return super().map(exc)
