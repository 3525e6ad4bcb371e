"""How a message is stored in Redis: one string per message, readable by the Lua scripts.

A stored body is `<priority>|<execution timeout ms>|<json>`. The prefix lets the scripts
place a message on its priority list and size its lease without parsing JSON; the JSON
holds the routing key, the payload and the parameters, so headers travel intact.
"""

from __future__ import annotations

import json

from repid.brokers.delivery import DeliveredKey
from repid.data import Parameters, RoutingKey
from repid.errors import PayloadDecodeError

#: the body is built here of plain values, with no cycle to look for
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode


def list_priority(priority: int) -> int:
    """The ready list (0 LOW, 1 MEDIUM, 2 HIGH) of a key's priority, clamped to that range."""
    return 0 if priority < 0 else 2 if priority > 2 else priority


def encode_body(key: RoutingKey, payload: str, params: Parameters) -> str:
    """Encode a message for the `msgs` hash."""
    timeout_ms = max(0, int(params.execution_timeout.total_seconds() * 1000))
    body = _dumps({"k": key.to_dict(), "p": payload, "a": params.to_dict()})
    return f"{list_priority(key.priority)}|{timeout_ms}|{body}"


def ready_ms(params: Parameters) -> str:
    """The message's ready time in epoch milliseconds, or '' when it is ready now."""
    at = params.ready_at
    return "" if at is None else str(int(at.timestamp() * 1000))


def short_reason(exc: BaseException, limit: int = 300) -> str:
    """`exc` as one line of at most `limit` characters, for logs and the dead reason."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def decode_stored(raw: bytes) -> tuple[DeliveredKey, str, Parameters]:
    """Decode a stored body as Redis sent it (bytes). Any failure, of any type (not UTF-8,
    not JSON, nested too deep, a number out of range, wrong types), raises
    PayloadDecodeError, so one bad message never stops the others."""
    try:
        return decode_body(raw.decode())
    except PayloadDecodeError:
        raise
    except Exception as exc:
        raise PayloadDecodeError(short_reason(exc)) from exc


def decode_body(body: str) -> tuple[DeliveredKey, str, Parameters]:
    """Decode a stored body for a delivery; raise PayloadDecodeError (a poison message)
    when it cannot be."""
    if not body:
        raise PayloadDecodeError("the message has no stored body")
    start = body.find("{")
    if start < 0:
        raise PayloadDecodeError("the stored body has no JSON part")
    try:
        data = json.loads(body[start:])
    except ValueError as exc:
        raise PayloadDecodeError(f"the stored body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PayloadDecodeError("the stored body must be a JSON object")
    try:
        key = DeliveredKey.from_dict(data["k"])
        payload = data["p"]
        raw_params = data["a"]
    except (KeyError, TypeError, ValueError) as exc:
        raise PayloadDecodeError(f"the stored routing key is malformed: {exc!r}") from exc
    if not isinstance(payload, str):
        raise PayloadDecodeError("the stored payload must be a string")
    if not isinstance(raw_params, dict):
        raise PayloadDecodeError("the stored parameters must be a JSON object")
    params = Parameters.from_dict(raw_params)
    if params.ttl is not None:
        # the worker adds the ttl to a date: one too large for that is poison here, not an
        # error in the worker (OverflowError propagates to `decode_stored`)
        _ = params.timestamp + params.ttl
    return key, payload, params
