"""How the one-shot commands print: aligned tables, times, shortened arguments, JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click

#: how many characters of a message's arguments a listing shows
ARGS_WIDTH = 80


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Lines of a text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                      for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in rows]


def count(value: int) -> str:
    """A count, or `-` where the broker cannot tell (-1)."""
    return str(value) if value >= 0 else "-"


def amount(number: int, noun: str) -> str:
    """`1 dead message`, `2 dead messages`: a number and its noun, plural when not 1."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def when(moment: datetime | None) -> str:
    """A time as `2026-01-05 10:00:00 UTC`; `-` for none."""
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(moment: datetime | None) -> str | None:
    """A time for JSON (ISO 8601), or None."""
    return None if moment is None else moment.isoformat()


def escaped(text: str) -> str:
    """`text` with every non-printable character (line breaks, terminal escapes) escaped,
    so that one value stays on one line and cannot drive the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def shorten(text: str, width: int = ARGS_WIDTH) -> str:
    """`text` escaped and cut to `width` characters (ending in `...` when cut)."""
    text = escaped(text)
    return text if len(text) <= width else text[:width - 3] + "..."


def echo_json(document: Any) -> None:
    """Print one JSON document on stdout."""
    click.echo(json.dumps(document))
