"""JSON encoding of job arguments and actor results."""

from __future__ import annotations

import dataclasses
import json
from datetime import date, datetime, timedelta
from enum import Enum
from typing import Any
from uuid import UUID

#: A payload `{"$repid_args_bucket": "<id>"}` means: the arguments are in the args bucket.
ARGS_BUCKET_MARKER = "$repid_args_bucket"


def _default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # pydantic models
        return dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (UUID, Enum)):
        return str(value.value if isinstance(value, Enum) else value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(
        f"{type(value).__name__} is not JSON-serializable: convert it to plain data "
        "(dict, list, str, number) or give the actor a custom converter"
    )


#: one encoder for every call (`json.dumps` with options builds one per call)
_encode = json.JSONEncoder(default=_default, separators=(",", ":")).encode


def to_json(value: Any) -> str:
    """Encode to compact JSON; pydantic models, dataclasses, datetimes, UUIDs and enums
    become plain JSON values."""
    return _encode(value)


def encode_args(args: Any) -> str:
    """A job's arguments as the message payload: a JSON object (by name) or array."""
    if hasattr(args, "model_dump"):
        args = args.model_dump(mode="json")
    if not isinstance(args, (dict, list, tuple)):
        raise TypeError(
            f"job args must be a dict of argument names to values (or a list), not "
            f"{type(args).__name__}: e.g. Job('add', args={{'a': 1, 'b': 2}})"
        )
    return to_json(args)
