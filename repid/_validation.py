"""Checks on user input, each failing with a message that names the problem and the fix.

A message quotes a name the user chose (a queue, an actor) but never a value passed in,
only its type: values may be secrets and errors end up in logs."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

#: job, actor and queue names: a letter or an underscore first, as in repid 1.x
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
#: ids (of jobs, args and result buckets): letters, digits, `-` and `_`
_ID = re.compile(r"^[A-Za-z0-9_-]+$")
#: the shortest duration a broker keeps
_ONE_SECOND = timedelta(seconds=1)


def check_name(value: str, what: str) -> str:
    """Names: a letter or `_`, then letters, digits, `-` and `_`, so every broker can use
    them."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(
            f"{what} {value!r} is invalid: start it with a letter or '_', then use only "
            "letters, digits, '-' and '_'"
        )
    return value


def check_id(value: str, what: str) -> str:
    """Ids: letters, digits, `-` and `_` (a digit may come first: ids are often hex)."""
    if not isinstance(value, str) or not _ID.match(value):
        raise ValueError(
            f"{what} {value!r} is invalid: use only letters, digits, '-' and '_' (and at "
            "least one character)"
        )
    return value


def check_duration(value: timedelta | float | int | None, what: str) -> timedelta | None:
    """A duration of at least one second, given as a timedelta or seconds."""
    if value is None:
        return None
    if type(value) is timedelta and value >= _ONE_SECOND:  # the common case, checked first
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = timedelta(seconds=value)
    if not isinstance(value, timedelta):
        raise TypeError(f"{what} must be a timedelta or a number of seconds, not a "
                        f"{type(value).__name__}")
    if value < _ONE_SECOND:
        raise ValueError(f"{what} is {value.total_seconds()} s; it must be at least 1 second "
                         "(brokers keep time to the second)")
    return value


def check_datetime(value: datetime | float | int | None, what: str) -> datetime | None:
    """A moment as an aware datetime: a naive datetime is the process's local time, as in
    repid 1.x (`datetime.now() + timedelta(seconds=5)` is five seconds from now); a number
    is a UNIX timestamp."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, timezone.utc)
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime or a UNIX timestamp, not a "
                        f"{type(value).__name__}")
    if value.tzinfo is not None:
        return value
    try:
        return value.astimezone(timezone.utc)  # a naive datetime is read as local time
    except (OverflowError, OSError):  # the local offset of a far date is unknown
        return value.replace(tzinfo=timezone.utc)


def check_headers(headers: dict[str, str] | None) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise TypeError("headers must be a dict of str to str, e.g. {'tenant': 'acme'}")
    return dict(headers)


def check_cron(expression: str) -> str:
    try:
        from croniter import croniter
    except ImportError:  # pragma: no cover - depends on the install
        raise ImportError("cron jobs need croniter: pip install 'repid[cron]'") from None
    if not croniter.is_valid(expression):
        raise ValueError(f"cron expression {expression!r} is invalid, e.g. use '*/5 * * * *'")
    return expression
