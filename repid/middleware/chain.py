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
    so a broker call with no plugin costs one `is None` check."""

    __slots__ = ("after", "aliases", "before", "name", "plugin", "single", "start", "wrappers")

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
        self.single = len(wrappers) == 1 and not before and not after
        # the first wrapper, for the single-wrapper fast path
        self.start: Callable[[dict[str, Any]], Gen] | None = None
        self.plugin = ""
        if wrappers:
            self.start, self.plugin = wrappers[0]

    async def _run_many(
        self, call: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """`run` for several wrappers or v1 subscribers."""
        v1_values = None
        if self.before:
            v1_values = self.aliases(kwargs)
            for sub in self.before:
                await sub.call(v1_values)

        started: list[tuple[Gen, str]] = []
        for start, plugin in self.wrappers:
            try:
                gen = start(kwargs)
                next(gen)
            except StopIteration:
                logger.error(
                    "plugin %s: %s wrapper returned without yielding; skipped", plugin, self.name
                )
                continue
            except Exception:
                logger.exception(
                    "plugin %s raised in %s before the call; skipped", plugin, self.name
                )
                continue
            started.append((gen, plugin))

        error: BaseException | None = None
        result: Any = None
        try:
            result = await call(*args)
        except BaseException as exc:
            error = exc

        while started:
            gen, plugin = started.pop()
            try:
                if error is None:
                    gen.send(result)
                else:
                    gen.throw(error)
            except StopIteration as stop:
                result, error = stop.value, None
            except BaseException as exc:
                if exc is not error:
                    logger.error(
                        "plugin %s raised in %s after the call; ignored",
                        plugin,
                        self.name,
                        exc_info=exc,
                    )
            else:
                gen.close()
                logger.error("plugin %s: %s wrapper yielded twice; ignored", plugin, self.name)

        if error is not None:
            raise error
        if self.after:
            if v1_values is None:
                v1_values = self.aliases(kwargs)
            v1_values["result"] = result
            for sub in self.after:
                await sub.call(v1_values)
        return result

    async def run(
        self, call: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Await `call(*args)` inside every wrapper (the hook gets `kwargs`); return its
        result, which a wrapper may replace."""
        if not self.single:
            return await self._run_many(call, args, kwargs)
        gen = self.enter(kwargs)
        try:
            result = await call(*args)
        except BaseException as exc:
            return self.fail(gen, exc)
        return self.leave(gen, result)

    # For a `single` chain (one wrapper, no v1 subscribers) a hot caller may inline `run`
    # as enter / await the call / leave (or fail), saving a coroutine per call:

    def enter(self, kwargs: dict[str, Any]) -> Gen | None:
        """Start the one wrapper; None if it failed to start (logged, then skipped)."""
        start, plugin = self.wrappers[0]
        try:
            gen = start(kwargs)
            next(gen)
        except StopIteration:
            logger.error(
                "plugin %s: %s wrapper returned without yielding; skipped", plugin, self.name
            )
            return None
        except Exception:
            logger.exception("plugin %s raised in %s before the call; skipped", plugin, self.name)
            return None
        return gen

    def leave(self, gen: Gen | None, result: Any) -> Any:
        """Hand the call's result to the wrapper; return what it returns."""
        if gen is None:
            return result
        try:
            gen.send(result)
        except StopIteration as stop:
            return stop.value
        except Exception as exc:
            logger.error(
                "plugin %s raised in %s after the call; ignored",
                self.plugin,
                self.name,
                exc_info=exc,
            )
            return result
        gen.close()
        logger.error("plugin %s: %s wrapper yielded twice; ignored", self.plugin, self.name)
        return result

    def fail(self, gen: Gen | None, error: BaseException) -> Any:
        """Throw the call's exception into the wrapper; re-raise it unless the wrapper
        returned a value instead."""
        if gen is None:
            raise error
        try:
            gen.throw(error)
        except StopIteration as stop:
            return stop.value
        except BaseException as exc:
            if exc is error:
                raise
            logger.error(
                "plugin %s raised in %s after the call; ignored",
                self.plugin,
                self.name,
                exc_info=exc,
            )
        else:
            gen.close()
            logger.error("plugin %s: %s wrapper yielded twice; ignored", self.plugin, self.name)
        raise error
