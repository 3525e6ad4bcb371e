"""v1-style subscribers: functions named `before_<event>` / `after_<event>`.

Each event maps to one around hook. A subscriber receives only the keyword arguments it
names, under their v1 names; `after_*` subscribers may also take `result`.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable
from typing import Any

from repid.middleware.chain import Subscriber

logger = logging.getLogger("repid.middleware")

#: v1 event name -> (around hook, the v1 argument names it offers)
EVENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "consume": ("repid_consume", ()),
    "enqueue": ("repid_enqueue", ("key", "payload", "params")),
    "requeue": ("repid_requeue", ("key", "payload", "params")),
    "queue_declare": ("repid_queue_declare", ("queue_name",)),
    "queue_flush": ("repid_queue_flush", ("queue_name",)),
    "queue_delete": ("repid_queue_delete", ("queue_name",)),
    "ack": ("repid_ack", ("key",)),
    "nack": ("repid_nack", ("key",)),
    "reject": ("repid_reject", ("key",)),
    "get_bucket": ("repid_get_bucket", ("id_",)),
    "store_bucket": ("repid_store_bucket", ("id_", "payload")),
    "delete_bucket": ("repid_delete_bucket", ("id_",)),
    "actor_run": ("repid_actor_run", ("actor", "key", "parameters", "payload")),
}


def v1_values(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The hook's arguments under their v1 names."""
    values = dict(kwargs)
    if "queue" in kwargs:
        values["queue_name"] = kwargs["queue"]
    if "params" in kwargs:
        values["parameters"] = kwargs["params"]
    return values


def parse_name(name: str) -> tuple[str, str] | None:
    """`before_enqueue` -> ("before", "enqueue"); None if the name is not an event."""
    for stage in ("before_", "after_"):
        if name.startswith(stage) and name[len(stage):] in EVENTS:
            return stage[:-1], name[len(stage):]
    return None


def make_subscriber(function: Callable[..., Any], stage: str, event: str) -> Subscriber:
    params = inspect.signature(function).parameters
    offered = set(EVENTS[event][1]) | ({"result"} if stage == "after" else set())
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    names = tuple(offered) if takes_all else tuple(n for n in params if n in offered)
    unknown = [n for n, p in params.items()
               if n not in offered and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
               and p.default is p.empty]
    if unknown:
        raise TypeError(
            f"subscriber {function.__qualname__} asks for {unknown}, which {stage}_{event} "
            f"does not offer; it may take any of {sorted(offered)}"
        )
    return Subscriber(function, names, inspect.iscoroutinefunction(function))


def collect(obj: Any) -> list[tuple[str, str, Callable[..., Any]]]:
    """The (stage, event, function) triples an object offers; odd names are warned about."""
    found = []
    for attr in dir(obj):
        if attr.startswith("_"):
            continue
        value = getattr(obj, attr)
        if not callable(value):
            continue
        parsed = parse_name(attr)
        if parsed is None:
            if attr.startswith(("before_", "after_")):
                warnings.warn(f"{attr} on {obj!r} matches no repid event; ignored",
                              stacklevel=3)
            continue
        found.append((parsed[0], parsed[1], value))
    return found
