"""JSON encoding of job arguments and actor results.

What JSON cannot carry as it is, is converted as repid 1.x did, and refused otherwise
(docs/guide/args_and_results.md has the table):

- converted: a `datetime`, `date` or `time` to its ISO 8601 string, a `timedelta` to its
  seconds (a float), a tuple, `set` or `frozenset` to a list, a dataclass to an object of
  its fields, a pydantic model to its JSON data (`model_dump(mode="json")`), a `UUID` to
  its string, an `Enum` member to its value. A parameter annotated with the type gets the
  type back when pydantic is installed (`PydanticConverter` coerces by annotation);
  `BasicConverter` passes the JSON value on, as in repid 1.x.
- kept as in repid 1.x: a float NaN or infinity is written `NaN`, `Infinity`, `-Infinity`
  (JavaScript's literals, not strict JSON: Python's `json` and pydantic read them back,
  a strict parser of another language refuses them).
- refused (TypeError): anything else (`bytes`, `Decimal`, `complex`, any other object),
  with a message naming the argument (or the place in the result), its type, and what
  to send instead.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

#: A payload `{"$repid_args_bucket": "<id>"}` means: the arguments are in the args bucket.
ARGS_BUCKET_MARKER = "$repid_args_bucket"

_BYTES = ("send text (value.decode()) or base64 (base64.b64encode(value).decode(), decoded "
          "in the actor with base64.b64decode)")
#: what to send instead of a value of these types (the rest: plain data)
_INSTEAD: dict[type, str] = {
    bytes: _BYTES,
    bytearray: _BYTES,
    Decimal: "send str(value), exact, and annotate the parameter Decimal (with pydantic "
             "installed the actor gets a Decimal back), or float(value) if rounding is "
             "acceptable",
    complex: "send [value.real, value.imag]",
}
_PLAIN = ("convert it to plain data (dict, list, str, number, bool, None) or give the actor "
          "a custom converter")


def _default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # pydantic models
        return dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value  # encoded in turn: an Enum of dates gives ISO strings
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable: "
                    f"{_INSTEAD.get(type(value), _PLAIN)}")


#: one encoder for every call (`json.dumps` with options builds one per call)
_encode = json.JSONEncoder(default=_default, separators=(",", ":")).encode

_SCALARS = (str, int, float, bool, type(None))
_CONTAINERS = (dict, list, tuple, set, frozenset)


def _children(value: Any) -> Iterator[tuple[str, Any, bool]]:
    """(where, child, is_key) for each value inside `value`, as the encoder reaches them
    (a dataclass's or model's fields after conversion)."""
    if not isinstance(value, (*_SCALARS, *_CONTAINERS)):
        try:
            value = _default(value)
        except TypeError:
            return
    if isinstance(value, dict):
        for key, child in value.items():
            yield f"[{key!r}]", key, True
            yield f"[{key!r}]", child, False
    elif isinstance(value, (list, tuple, set, frozenset)):
        for index, child in enumerate(value):
            yield f"[{index}]", child, False


def _refusal(where: str, value: Any) -> str | None:
    """What is wrong with `value` (at `where`) or the first value inside it JSON cannot
    carry, and what to send instead; None when it can carry all of it."""
    if not isinstance(value, (*_SCALARS, *_CONTAINERS)):
        try:
            _default(value)
        except TypeError:
            kind = type(value).__name__
            return (f"{where} is {kind}, which JSON cannot carry: "
                    f"{_INSTEAD.get(type(value), _PLAIN)}")
    for step, child, is_key in _children(value):
        if is_key:
            if not isinstance(child, _SCALARS):
                return (f"{where}{step} is a {type(child).__name__} key, but a JSON "
                        "object's keys are strings: use str keys (int, float, bool and "
                        "None keys become strings)")
            continue
        found = _refusal(f"{where}{step}", child)
        if found is not None:
            return found
    return None


def to_json(value: Any) -> str:
    """Encode to compact JSON; pydantic models, dataclasses, datetimes, UUIDs and enums
    become plain JSON values (see the module docstring); TypeError saying where a value
    JSON cannot carry is (`value is not JSON-serializable: value['a'][0] is bytes, ...`)."""
    try:
        return _encode(value)
    except TypeError as exc:
        if isinstance(value, _CONTAINERS):
            found = _refusal("value", value)
            if found is not None:
                raise TypeError(f"value is not JSON-serializable: {found}") from None
        raise exc from None


def encode_args(args: Any) -> str:
    """A job's arguments as the message payload: a JSON object (by name) or array;
    TypeError naming the argument JSON cannot carry, its type, and what to send instead
    (`argument 'data' is bytes, which JSON cannot carry: send ...`)."""
    if hasattr(args, "model_dump"):
        args = args.model_dump(mode="json")
    if not isinstance(args, (dict, list, tuple)):
        raise TypeError(
            f"job args must be a dict of argument names to values (or a list), not "
            f"{type(args).__name__}: e.g. Job('add', args={{'a': 1, 'b': 2}})"
        )
    try:
        return _encode(args)
    except TypeError as exc:
        named = args.items() if isinstance(args, dict) else enumerate(args)
        for name, value in named:
            if not isinstance(name, (str, int)):
                raise TypeError(f"argument name {name!r} is a {type(name).__name__}: "
                                "argument names are strings, the actor's parameter "
                                "names") from None
            label = f"argument {name!r}" if isinstance(args, dict) else f"argument #{name}"
            found = _refusal(label, value)
            if found is not None:
                raise TypeError(found) from None
        raise exc from None
