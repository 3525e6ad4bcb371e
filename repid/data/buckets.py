"""Buckets: stored blobs for a job's arguments and for an actor's result."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from repid.errors import PayloadDecodeError

_UTC = timezone.utc


def _now() -> datetime:
    return datetime.now(_UTC)


@dataclass(frozen=True, slots=True)
class ArgsBucket:
    """A job's encoded arguments, stored apart from the message."""

    data: str
    timestamp: datetime = field(default_factory=_now)
    ttl: timedelta | None = None

    def encode(self) -> str:
        return json.dumps({"kind": "args", "data": self.data, "ts": self.timestamp.timestamp(),
                           "ttl": None if self.ttl is None else self.ttl.total_seconds()})


@dataclass(frozen=True, slots=True)
class ResultBucket:
    """What an actor run produced.

    `data` is the return value decoded from JSON; on failure `success` is False and
    `exception` names the exception's type and message (`ValueError: bad input`).
    """

    data: Any
    success: bool
    started_when: datetime
    finished_when: datetime
    exception: str | None = None
    timestamp: datetime = field(default_factory=_now)
    ttl: timedelta | None = None

    def encode(self) -> str:
        return json.dumps({
            "kind": "result", "data": self.data, "success": self.success,
            "exception": self.exception, "started": self.started_when.timestamp(),
            "finished": self.finished_when.timestamp(), "ts": self.timestamp.timestamp(),
            "ttl": None if self.ttl is None else self.ttl.total_seconds(),
        })


BucketT = ArgsBucket | ResultBucket


def decode_bucket(raw: str | bytes) -> BucketT:
    """Decode what `ArgsBucket.encode` or `ResultBucket.encode` produced."""
    try:
        d = json.loads(raw)
        ttl = None if d.get("ttl") is None else timedelta(seconds=d["ttl"])
        ts = datetime.fromtimestamp(d["ts"], _UTC)
        if d["kind"] == "args":
            return ArgsBucket(data=d["data"], timestamp=ts, ttl=ttl)
        return ResultBucket(
            data=d["data"], success=bool(d["success"]), exception=d["exception"],
            started_when=datetime.fromtimestamp(d["started"], _UTC),
            finished_when=datetime.fromtimestamp(d["finished"], _UTC), timestamp=ts, ttl=ttl,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise PayloadDecodeError(f"bucket is malformed: {exc!r}") from exc
