"""Drives the wrappers of one around hook (and any v1 subscribers) around an awaited call.

This runs on every broker call once a plugin is registered, so it is kept lean: a chain
compiles its `enter` once, from its wrappers and the call's `CallSite`
(`repid.middleware.through`): it reads each hook argument a wrapper names from the
call's own arguments and calls the wrapper with them positionally, so no dictionary of
hook arguments is built and no adapter sits between the call and the wrapper.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Generator
from types import MethodType
from typing import Any

from repid.middleware.through import LEAVE_ONE, SITES, indented

logger = logging.getLogger("repid.middleware")

Gen = Generator[None, Any, Any]
#: (the wrapper's function, the hook arguments it names in order, plugin name for logs)
Wrapper = tuple[Callable[..., Gen], tuple[str, ...], str]


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


def _compile_leave_one() -> Callable[[HookChain, Gen | None, Any], Any]:
    """`leave` for one wrapper, from the same text the call-throughs write out."""
    namespace: dict[str, Any] = {}
    source = "def leave_one(chain, state, result):\n" + indented(LEAVE_ONE.splitlines(), 4)
    exec(compile(source, "<leave one wrapper>", "exec"), namespace)
    leave_one: Callable[[HookChain, Gen | None, Any], Any] = namespace["leave_one"]
    return leave_one


class HookChain:
    """Everything that runs around one kind of call. Exists only when something is there,
    so a call with no plugin costs one `is None` check.

    A caller drives it as `state = chain.enter(obj, *args)` (the call's own object and
    arguments), awaits its own call, then `chain.leave(state, result)` or
    `chain.fail(state, error)` (see `repid.middleware.through`, whose call-throughs write
    out `leave` for a single wrapper, from the same text); with v1 subscribers it
    awaits `chain.run(...)` instead. One semantics whatever the number of wrappers: each
    wrapper sees the call's result or error and may replace it (returning a value
    instead of an error, or another value); a wrapper that raises something else is
    logged and ignored. A wrapper that fails before its yield is logged and skipped.
    """

    __slots__ = ("after", "aliases", "before", "enter", "event", "fail", "leave", "name",
                 "single", "subscribers", "wrappers")

    def __init__(
        self,
        event: str,
        name: str,
        wrappers: tuple[Wrapper, ...],
        before: tuple[Subscriber, ...],
        after: tuple[Subscriber, ...],
        aliases: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> None:
        self.event = event
        self.name = name
        self.wrappers = wrappers
        self.before = before
        self.after = after
        self.aliases = aliases
        #: v1 subscribers are there: drive the chain with `run`
        self.subscribers = bool(before or after)
        #: one wrapper: the state between enter and leave is its generator (or None)
        self.single = len(wrappers) == 1
        #: `enter(obj, *args)`: start every wrapper, outermost first (compiled on first use)
        self.enter: Callable[..., Any] = self._compile_and_enter
        #: `leave(state, result)`: hand the call's result to the wrappers, innermost
        #: first; return what the outermost returns
        self.leave: Callable[[Any, Any], Any] = (
            MethodType(_leave_one, self) if self.single else self._leave)
        #: `fail(state, error)`: throw the call's error into the wrappers, innermost
        #: first; re-raise it unless a wrapper returned a value instead
        self.fail: Callable[[Any, BaseException], Any] = (
            self._fail_one if self.single else self._fail)

    # --- entering: compiled once per chain ---

    def _compile_and_enter(self, obj: Any, *args: Any) -> Any:
        self.enter = self._compile_enter()
        return self.enter(obj, *args)

    def _compile_enter(self) -> Callable[..., Any]:
        """The chain's `enter(self, <call params>)`: reads the hook arguments its wrappers
        name (each once), then starts each wrapper with them, positionally. One wrapper:
        returns its generator, or None; more: a list of (generator, wrapper index)."""
        site = SITES[self.event]
        namespace: dict[str, Any] = {"skipped": self._skipped}
        needed = dict.fromkeys(name for _, argnames, _ in self.wrappers for name in argnames)
        body = [f"_{name} = {site.hook_args[name]}" for name in needed]
        if not self.single:
            body.append("started = []")
        for index, (function, argnames, _) in enumerate(self.wrappers):
            namespace[f"w{index}"] = function
            call = f"w{index}({', '.join(f'_{name}' for name in argnames)})"
            body += ["try:", f"    gen = {call}", "    next(gen)",
                     "except Exception as exc:", f"    {'return ' if self.single else ''}"
                     f"skipped({index}, exc)"]
            body += ["return gen"] if self.single else [
                "else:", f"    started.append((gen, {index}))"]
        if not self.single:
            body.append("return started")
        enter: Callable[..., Any] = site.compile("enter", body, namespace)
        return enter

    def _skipped(self, index: int, exc: Exception) -> None:
        """A wrapper that returned or raised before its yield: logged; the call goes on
        without it."""
        plugin = self.wrappers[index][2]
        if isinstance(exc, StopIteration):
            logger.error("plugin %s: %s wrapper returned without yielding; skipped", plugin,
                         self.name)
        else:
            logger.error("plugin %s raised in %s before the call; skipped", plugin,
                         self.name, exc_info=exc)

    # --- leaving ---

    def _fail_one(self, gen: Gen | None, error: BaseException) -> Any:
        if gen is None:
            raise error
        result, left = self._resume(gen, 0, None, error)
        if left is not None:
            raise left
        return result

    def _leave(self, started: list[tuple[Gen, int]], result: Any) -> Any:
        """`_unwind` with no error, written out: it runs for every message."""
        while started:
            gen, index = started.pop()
            try:
                gen.send(result)
            except StopIteration as stop:
                result = stop.value
            except BaseException as exc:
                self.ignored(index, exc)
            else:
                self.yielded_twice(gen, index)
        return result

    def _fail(self, started: list[tuple[Gen, int]], error: BaseException) -> Any:
        return self._unwind(started, None, error)

    def _resume(self, gen: Gen, index: int, result: Any,
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
                self.ignored(index, exc)
        else:
            self.yielded_twice(gen, index)
        return result, error

    def ignored(self, index: int, exc: BaseException, result: Any = None) -> Any:
        """Wrapper `index` raised after the call: logged; `result` stands."""
        logger.error("plugin %s raised in %s after the call; ignored",
                     self.wrappers[index][2], self.name, exc_info=exc)
        return result

    def yielded_twice(self, gen: Gen, index: int, result: Any = None) -> Any:
        """Wrapper `index` yielded a second time: closed and logged; `result` stands."""
        gen.close()
        logger.error("plugin %s: %s wrapper yielded twice; ignored", self.wrappers[index][2],
                     self.name)
        return result

    def _unwind(self, started: list[tuple[Gen, int]], result: Any,
                error: BaseException | None) -> Any:
        while started:
            gen, index = started.pop()
            result, error = self._resume(gen, index, result, error)
        if error is not None:
            raise error
        return result

    # --- with v1 subscribers ---

    async def run(self, call: Callable[..., Awaitable[Any]], obj: Any, *args: Any) -> Any:
        """Await `call(*args)` between the v1 `before_*` subscribers and the wrappers,
        then the `after_*` subscribers (which get the result). `obj` is the object the call
        is made on, from which the hook arguments are read."""
        v1_values = self.aliases(SITES[self.event].kwargs_builder(obj, *args))
        for sub in self.before:
            await sub.call(v1_values)
        state = self.enter(obj, *args)
        try:
            result = await call(*args)
        except BaseException as exc:
            result = self.fail(state, exc)
        else:
            result = self.leave(state, result)
        if self.after:
            v1_values["result"] = result
            for sub in self.after:
                await sub.call(v1_values)
        return result


_leave_one = _compile_leave_one()
