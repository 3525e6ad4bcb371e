"""redis-py's errors mapped to repid's, in one place.

Every call the Redis brokers make to Redis that can fail for want of Redis runs inside a
`RedisErrors(...)`: a connection that failed, or a command Redis did not answer in time
(`CONNECTION_ERRORS`, raised once redis-py's own retries are spent), leaves it as the
repid error that call promises (an enqueue `EnqueueNotConfirmedError`, anything else
`BrokerConnectionError`), with a message that says what could not be done and, after a
colon, redis-py's reason; the redis-py error is kept as its `__cause__`. Every other
exception passes through unchanged, and a block that does more than map (retry, log,
free capacity) keeps that logic where it is.

A login Redis refuses is not a Redis that cannot be reached: `login_refused` says which
credentials were refused (WRONGPASS), that a password is needed (NOAUTH), or that the DSN
gives a password to a Redis that checks none (`password_ignored`: the user believes the
server is protected, so repid refuses to connect). The client checks the login once, on
a connection of its own and without retries, before anything else (`_client.py`), so a
refused login fails at once; a refused login later on (the password changed on the
server) leaves a `RedisErrors` block saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from repid.errors import BrokerConnectionError

#: errors that mean "Redis could not be reached or did not answer in time"; on a Redis
#: Cluster also: a node is down or the slot has no owner yet (CLUSTERDOWN, an uncovered
#: slot, no node reachable), or a slot is being moved (TRYAGAIN)
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, OSError,
    ClusterDownError, SlotNotCoveredError, RedisClusterUnreachableError, TryAgainError,
)


class RedisErrors:
    """A `with` block (in sync or async code) whose connection errors leave it as
    `error(f"{what % args}: {reason}")`, raised from the redis-py error::

        with RedisErrors(BrokerConnectionError, "cannot flush queue %r", queue_name):
            await client.unlink(...)

    `what` is %-formatted with `args` only when the block fails (and used as it is when
    there are no `args`), so a block that succeeds costs one small object, never a
    string. `hint`, when given, follows the reason of a connection error: what to check.
    """

    __slots__ = ("_args", "_error", "_hint", "_what")

    def __init__(self, error: Callable[[str], Exception], what: str, *args: object,
                 hint: str = "") -> None:
        self._error = error
        self._what = what
        self._args = args
        self._hint = hint

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:
            mapped = mapped_error(exc, self._error, self.describe, self._hint)
            if mapped is not None:
                raise mapped from exc

    def describe(self) -> str:
        """What the block could not do, without the reason."""
        return self._what % self._args if self._args else self._what


def mapped_error(exc: BaseException, error: Callable[[str], Exception],
                 describe: Callable[[], str], hint: str = "") -> Exception | None:
    """The `error` a Redis connection error `exc` becomes (`describe()` says what could not
    be done, `hint` what to check), or None for any other exception. `RedisErrors` uses
    it; a hot path that cannot afford a `with` object writes `except CONNECTION_ERRORS` and
    calls it."""
    if isinstance(exc, AuthenticationError):
        return error(f"{describe()}: Redis refused the login ({exc}); check the user and "
                     "password in the DSN")
    if isinstance(exc, CONNECTION_ERRORS):
        if hint:
            return error(f"{describe()}: {str(exc).rstrip('.')}; {hint}")
        return error(f"{describe()}: {exc}")
    return None


#: what Redis answers an AUTH with when the user has no password (Redis >= 6, < 6)
_NO_PASSWORD_SET = ("called without any password configured", "no password is set")


def password_ignored(where: str, user: str | None) -> BrokerConnectionError:
    """The DSN gives a password that Redis does not check (`where`: the masked DSN)."""
    whose = "its default user" if user in (None, "", "default") else f"user {user!r}"
    return BrokerConnectionError(
        f"cannot connect to Redis at {where}: the DSN gives a password, but Redis checks "
        f"no password for {whose} (it accepts any, or none), so the server is not "
        "protected as the DSN suggests. Either set the password on the server "
        "(`requirepass` in redis.conf, or `ACL SETUSER`), or remove it from the DSN "
        "(redis://host:6379/0).")


def login_refused(exc: AuthenticationError, where: str, user: str | None,
                  has_password: bool) -> BrokerConnectionError:
    """What a refused login means, for a DSN (`where`, masked) with or without a password:
    a password Redis does not check, a password Redis needs (NOAUTH), or a wrong user or
    password (WRONGPASS)."""
    text = str(exc)
    if has_password and any(marker in text for marker in _NO_PASSWORD_SET):
        return password_ignored(where, user)
    if not has_password:
        return BrokerConnectionError(
            f"cannot connect to Redis at {where}: Redis needs a password and the DSN gives "
            f"none (NOAUTH: {text}). Put it in the DSN: redis://:PASSWORD@host:6379/0, or "
            "redis://USER:PASSWORD@host:6379/0 for an ACL user (percent-encode `@`, `:` "
            "and `/` in it).")
    who = f"user {user!r}" if user else "the default user"
    return BrokerConnectionError(
        f"cannot connect to Redis at {where}: Redis refused the credentials of {who} "
        f"(WRONGPASS: {text}). Check the user and password in the DSN (percent-encode "
        "`@`, `:` and `/` in them).")
