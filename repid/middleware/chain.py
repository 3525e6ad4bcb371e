"""Drives the wrappers of one around hook (and any v1 subscribers) around an awaited call.

This runs on every broker call once a plugin is registered, so it is kept lean: each
wrapper's arguments are picked by a getter built once at registration.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Generator
from operator import itemgetter
from typing import Any

logger = logging.getLogger("repid.middleware")

Gen = Generator[None, Any, Any]
#: (starts the wrapper from the hook's keyword arguments, plugin name for log lines)
Wrapper = tuple[Callable[[dict[str, Any]], Gen], str]


def make_starter(
    function: Callable[..., Gen], argnames: tuple[str, ...]
) -> Callable[[dict[str, Any]], Gen]:
    """A function calling `function` with the keyword arguments it names, positionally."""
    if not argnames:
        return lambda kwargs: function()
    if len(argnames) == 1:
        name = argnames[0]
        return lambda kwargs: function(kwargs[name])
    pick = itemgetter(*argnames)
    return lambda kwargs: function(*pick(kwargs))


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


class HookChain:
    """Everything that runs around one kind of call. Exists only when something is there,
    so a call with no plugin costs one `is None` check.

    A caller drives it as `started = chain.enter(kwargs)`, awaits its own call, then
    `chain.leave(started, result)` or `chain.fail(started, error)` (see
    `repid.middleware.through`); with v1 subscribers it awaits `chain.run(...)` instead.
    One semantics whatever the number of wrappers: each wrapper sees the call's result or
    error and may replace it (returning a value instead of an error, or another value); a
    wrapper that raises something else is logged and ignored.
    """

    __slots__ = ("after", "aliases", "before", "name", "single", "subscribers", "wrappers")

    def __init__(
        self,
        name: str,
        wrappers: tuple[Wrapper, ...],
        before: tuple[Subscriber, ...],
        after: tuple[Subscriber, ...],
        aliases: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> None:
        self.name = name
        self.wrappers = wrappers
        self.before = before
        self.after = after
        self.aliases = aliases
        #: v1 subscribers are there: drive the chain with `run`
        self.subscribers = bool(before or after)
        #: one wrapper and no subscriber: the `*_one` methods, with no list to keep
        self.single = len(wrappers) == 1 and not self.subscribers

    def enter(self, kwargs: dict[str, Any]) -> list[tuple[Gen, str]]:
        """Start every wrapper, outermost first; those that fail to start are logged and
        skipped."""
        started = []
        for start, plugin in self.wrappers:
            gen = self._start(start, plugin, kwargs)
            if gen is not None:
                started.append((gen, plugin))
        return started

    def leave(self, started: list[tuple[Gen, str]], result: Any) -> Any:
        """Hand the call's result to the wrappers, innermost first; return what the
        outermost returns (or raise what one of them turned it into)."""
        return self._unwind(started, result, None)

    def fail(self, started: list[tuple[Gen, str]], error: BaseException) -> Any:
        """Throw the call's error into the wrappers, innermost first; re-raise it unless a
        wrapper returned a value instead."""
        return self._unwind(started, None, error)

    def enter_one(self, kwargs: dict[str, Any]) -> Gen | None:
        """`enter` for a `single` chain: the one wrapper, started (None if it failed)."""
        start, plugin = self.wrappers[0]
        return self._start(start, plugin, kwargs)

    def leave_one(self, gen: Gen | None, result: Any) -> Any:
        """`leave` for a `single` chain (`_resume` with no error, written out: it runs
        for every message)."""
        if gen is None:
            return result
        try:
            gen.send(result)
        except StopIteration as stop:
            return stop.value
        except BaseException as exc:
            self._ignored(self.wrappers[0][1], exc)
            return result
        self._yielded_twice(gen, self.wrappers[0][1])
        return result

    def fail_one(self, gen: Gen | None, error: BaseException) -> Any:
        """`fail` for a `single` chain."""
        if gen is None:
            raise error
        result, left = self._resume(gen, self.wrappers[0][1], None, error)
        if left is not None:
            raise left
        return result

    def _start(self, start: Callable[[dict[str, Any]], Gen], plugin: str,
               kwargs: dict[str, Any]) -> Gen | None:
        """Run one wrapper up to its yield; None (logged) if it returned or raised."""
        try:
            gen = start(kwargs)
            next(gen)
        except StopIteration:
            logger.error("plugin %s: %s wrapper returned without yielding; skipped", plugin,
                         self.name)
            return None
        except Exception:
            logger.exception("plugin %s raised in %s before the call; skipped", plugin,
                             self.name)
            return None
        return gen

    def _resume(self, gen: Gen, plugin: str, result: Any,
                error: BaseException | None) -> tuple[Any, BaseException | None]:
        """Hand one wrapper the call's result or error; what it leaves: (result, error).
        A wrapper may return a value instead of an error; one that raises something else
        is logged and ignored."""
        try:
            if error is None:
                gen.send(result)
            else:
                gen.throw(error)
        except StopIteration as stop:
            return stop.value, None
        except BaseException as exc:
            if exc is not error:
                self._ignored(plugin, exc)
        else:
            self._yielded_twice(gen, plugin)
        return result, error

    def _ignored(self, plugin: str, exc: BaseException) -> None:
        logger.error("plugin %s raised in %s after the call; ignored", plugin, self.name,
                     exc_info=exc)

    def _yielded_twice(self, gen: Gen, plugin: str) -> None:
        gen.close()
        logger.error("plugin %s: %s wrapper yielded twice; ignored", plugin, self.name)

    def _unwind(self, started: list[tuple[Gen, str]], result: Any,
                error: BaseException | None) -> Any:
        while started:
            gen, plugin = started.pop()
            result, error = self._resume(gen, plugin, result, error)
        if error is not None:
            raise error
        return result

    async def run(self, call: Callable[..., Awaitable[Any]], args: tuple[Any, ...],
                  kwargs: dict[str, Any], hook_kwargs: dict[str, Any]) -> Any:
        """Await `call(*args, **kwargs)` between the v1 `before_*` subscribers and the
        wrappers, then the `after_*` subscribers (which get the result)."""
        v1_values = None
        if self.before:
            v1_values = self.aliases(hook_kwargs)
            for sub in self.before:
                await sub.call(v1_values)
        started = self.enter(hook_kwargs)
        try:
            result = await call(*args, **kwargs)
        except BaseException as exc:
            result = self.fail(started, exc)
        else:
            result = self.leave(started, result)
        if self.after:
            if v1_values is None:
                v1_values = self.aliases(hook_kwargs)
            v1_values["result"] = result
            for sub in self.after:
                await sub.call(v1_values)
        return result
