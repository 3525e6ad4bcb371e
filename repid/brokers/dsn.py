"""Printing a DSN safely: the password never reaches a log line or a repr."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def mask_dsn(dsn: str) -> str:
    """`amqp://user:secret@host/` -> `amqp://user:***@host/`."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparseable dsn>"
    if parts.password is None:
        return dsn
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
