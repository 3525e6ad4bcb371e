"""The repid 1.x subscribers: functions named `before_<event>` / `after_<event>`.

This module is the whole adapter between them and the hook contract: the events and the
arguments they offer (`EVENTS`), reading a subscriber's name and signature, `Subscriber`
(one function) and `Subscribers` (those of one event, in order). The chain runner
(`repid.middleware._chain.HookChain`) knows only `Subscribers.around`: it hands it the
wrappers and the call, and `Subscribers` runs the `before_*` subscribers, then them, then
the `after_*` subscribers.

Each event maps to one around hook (`hookspecs.AROUND_CALLS`). A subscriber receives
only the keyword arguments it names, under their v1 names; `after_*` subscribers may
also take `result`. A subscriber asking for an argument its event does not offer is
refused (TypeError) when it is added; a function or method whose name matches no event
is ignored with a warning naming the closest event. A subscriber that raises is logged
and the call goes on.

Where a subscriber runs (as in v1): a coroutine function runs on the event loop; any other
callable runs in a thread of the loop's default executor, with the caller's context
variables, so a blocking call in it (a report sent over the network) never stalls the
loop. The broker call it subscribes to waits for it either way, so `before_*` still runs
before the call and `after_*` after it.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import inspect
import logging
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

logger = logging.getLogger("repid.middleware")

R = TypeVar("R")


class Subscriber:
    """A v1-style `before_<event>` / `after_<event>` function, sync or async."""

    __slots__ = ("argnames", "function", "is_async", "name")

    def __init__(
        self, function: Callable[..., Any], argnames: tuple[str, ...], is_async: bool
    ) -> None:
        self.function = function
        self.argnames = argnames
        self.is_async = is_async
        self.name = getattr(function, "__qualname__", repr(function))

    async def call(self, values: dict[str, Any]) -> None:
        try:
            out = self.function(**{n: values[n] for n in self.argnames if n in values})
            if self.is_async:
                await out
        except Exception:
            logger.exception("middleware subscriber %s raised; ignored", self.name)


class Subscribers:
    """The v1 subscribers of one event, run around the wrappers and the call.

    Guarantees (as in repid 1.x, whatever the wrappers do):

    - every `before_*` subscriber runs, in the order added, before the first wrapper
      starts; each `after_*` one, in order, after the last wrapper left, and gets as
      `result` what the outermost wrapper returned;
    - when the call raised and no wrapper replaced the error with a value, the error
      propagates and no `after_*` subscriber runs;
    - a subscriber that raises is logged and the others still run (`Subscriber.call`).
    """

    __slots__ = ("after", "aliases", "before")

    def __init__(
        self,
        before: tuple[Subscriber, ...],
        after: tuple[Subscriber, ...],
        aliases: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.before = before
        self.after = after
        #: the hook's arguments under the names v1 subscribers know them by
        self.aliases = aliases or v1_values

    async def around(self, hook_args: Mapping[str, Any],
                     wrapped: Callable[[], Awaitable[R]]) -> R:
        """Run the `before_*` subscribers, await `wrapped()` (the wrappers around the
        call), then run the `after_*` subscribers with its `result`; return that."""
        values = self.aliases(hook_args)
        for sub in self.before:
            await sub.call(values)
        result = await wrapped()
        if self.after:
            values["result"] = result
            for sub in self.after:
                await sub.call(values)
        return result


def subscribers_of(before: tuple[Subscriber, ...],
                   after: tuple[Subscriber, ...]) -> Subscribers | None:
    """The `Subscribers` of one event; None when it has none (so its chain, if any, takes
    the plain path)."""
    return Subscribers(before, after) if before or after else None


#: v1 event name (a call of `hookspecs.AROUND_CALLS`) -> the v1 argument names it offers
EVENTS: dict[str, tuple[str, ...]] = {
    "consume": (),
    "enqueue": ("key", "payload", "params"),
    "requeue": ("key", "payload", "params"),
    "queue_declare": ("queue_name",),
    "queue_flush": ("queue_name",),
    "queue_delete": ("queue_name",),
    "ack": ("key",),
    "nack": ("key",),
    "reject": ("key",),
    "get_bucket": ("id_",),
    "store_bucket": ("id_", "payload"),
    "delete_bucket": ("id_",),
    "actor_run": ("actor", "key", "parameters", "payload"),
}


def v1_values(kwargs: Mapping[str, Any]) -> dict[str, Any]:
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


def unknown_name(name: str, owner: object = None) -> str:
    """Why a `before_*` / `after_*` name (of `owner`, when given) is ignored, with the
    closest event's name when one is close."""
    stage = "before_" if name.startswith("before_") else "after_"
    names = [stage + event for event in EVENTS]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]}?)" if close else f"; the events are {', '.join(EVENTS)}"
    where = "" if owner is None else f" on {owner!r}"
    return f"{name}{where} matches no repid event; ignored{hint}"


def is_async_callable(function: Callable[..., Any]) -> bool:
    """True for coroutine functions, also behind `functools.partial` or as an object whose
    `__call__` is one."""
    while isinstance(function, functools.partial):
        function = function.func
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        type(function).__call__)


def off_loop(function: Callable[..., Any]) -> Callable[..., Awaitable[None]]:
    """An async stand-in that runs the sync `function` in a thread (an awaitable it
    returns is awaited back on the loop)."""

    async def run_in_thread(**kwargs: Any) -> None:
        out = await asyncio.to_thread(function, **kwargs)
        if inspect.isawaitable(out):
            await out

    return run_in_thread


def make_subscriber(function: Callable[..., Any], stage: str, event: str) -> Subscriber:
    params = inspect.signature(function).parameters
    offered = set(EVENTS[event]) | ({"result"} if stage == "after" else set())
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    names = tuple(offered) if takes_all else tuple(n for n in params if n in offered)
    unknown = [n for n, p in params.items()
               if n not in offered and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
               and p.default is p.empty]
    if unknown:
        label = getattr(function, "__qualname__", repr(function))
        raise TypeError(
            f"subscriber {label} asks for {unknown}, which {stage}_{event} "
            f"does not offer; it may take any of {sorted(offered)}"
        )
    if is_async_callable(function):
        return Subscriber(function, names, True)
    subscriber = Subscriber(off_loop(function), names, True)
    subscriber.name = getattr(function, "__qualname__", repr(function))  # for log lines
    return subscriber


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
                warnings.warn(unknown_name(attr, obj), stacklevel=3)
            continue
        found.append((parsed[0], parsed[1], value))
    return found
