"""Checks on user input, each failing with a message that names the problem and the fix."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def check_name(value: str, what: str) -> str:
    """Names and ids: letters, digits, `-` and `_` only, so every broker can use them."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(
            f"{what} {value!r} is invalid: use only letters, digits, '-' and '_' (and at "
            "least one character)"
        )
    return value


def check_duration(value: timedelta | float | int | None, what: str) -> timedelta | None:
    """A duration of at least one second, given as a timedelta or seconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = timedelta(seconds=value)
    if not isinstance(value, timedelta):
        raise TypeError(f"{what} must be a timedelta or a number of seconds, not {value!r}")
    if value < timedelta(seconds=1):
        raise ValueError(f"{what} is {value.total_seconds()} s; it must be at least 1 second "
                         "(brokers keep time to the second)")
    return value


def check_datetime(value: datetime | float | int | None, what: str) -> datetime | None:
    """A moment as an aware datetime; naive datetimes are taken as UTC, numbers as epoch."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, timezone.utc)
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime or a UNIX timestamp, not {value!r}")
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


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
