"""Drives the wrappers of one around hook around an awaited call.

Every around call of repid is plain code of the same shape: a broker method, the
consumer's `__anext__` (`repid_consume`) and the worker's actor run (`repid_actor_run`)::

    def ack(self, key):
        chain = self._chains.ack
        if chain is None:                      # nothing registered: the call, directly
            return self._ack(key)
        return chain.around(_key_args(chain, self, key), self._ack, key)

The public method is a plain function that returns the coroutine to await: the
implementation's own, or the chain's around it; so a call costs no coroutine more than
its implementation with no plugin, and one more with plugins. `hook_args` holds every
argument of the hook, by the names of its hookspec (`repid.middleware.hookspecs`), and
is built only when a wrapper (or a v1 subscriber) names one (`takes_args`; `NO_ARGS`
otherwise); each wrapper is called with the arguments it names. One
semantics whatever the number of wrappers: each wrapper sees the call's result or error
and may replace it (a value instead of an error, or another value); a wrapper that fails
before its yield is logged and skipped, and one that raises something else after it is
logged and ignored.

The repid 1.x `before_*` / `after_*` subscribers are not run here: a chain holds them as
one `repid.middleware._v1.Subscribers` object (None when there are none) and hands it the
wrappers and the call to run between them. This module only knows that object's `around`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Generator, Mapping
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    from repid.middleware._v1 import Subscribers

logger = logging.getLogger("repid.middleware")

P = ParamSpec("P")
R = TypeVar("R")

Gen = Generator[None, Any, Any]
#: (the wrapper's function, the hook arguments it names in order, plugin name for logs)
Wrapper = tuple[Callable[..., Gen], tuple[str, ...], str]
#: the wrappers started for one call, outermost first: (generator, wrapper index)
Started = list[tuple[Gen, int]]
#: the hook arguments of a call when no wrapper names any
NO_ARGS: Mapping[str, Any] = MappingProxyType({})


class HookChain:
    """Everything that runs around one kind of call. Exists only when something is there,
    so a call with no plugin costs one `is None` check (see the module's docstring)."""

    __slots__ = ("event", "name", "single", "subscribers", "takes_args", "wrappers")

    def __init__(
        self,
        event: str,
        name: str,
        wrappers: tuple[Wrapper, ...],
        subscribers: Subscribers | None = None,
    ) -> None:
        self.event = event
        self.name = name
        self.wrappers = wrappers
        #: the v1 subscribers of this call, which run the wrappers between theirs; None
        #: when there are none
        self.subscribers = subscribers
        #: whether a call must build its hook arguments (else it passes `NO_ARGS`)
        self.takes_args = subscribers is not None or any(
            names for _, names, _ in wrappers)
        #: the only wrapper, when there is one and no v1 subscriber (the common case)
        self.single = wrappers[0] if len(wrappers) == 1 and subscribers is None else None

    async def around(self, hook_args: Mapping[str, Any], call: Callable[P, Awaitable[R]],
                     *args: P.args, **kwargs: P.kwargs) -> R:
        """Await `call(*args, **kwargs)` inside the wrappers (and between the v1
        `before_*` and `after_*` subscribers); return what the outermost wrapper leaves."""
        single = self.single
        if single is None:
            subscribers = self.subscribers
            if subscribers is None:
                return await self._around_all(hook_args, call, *args, **kwargs)
            return await subscribers.around(
                hook_args, partial(self._around_all, hook_args, call, *args, **kwargs))
        # one wrapper and no subscriber, the common case: `_enter` and `_leave` written
        # out for it
        function, argnames, _ = single
        try:
            gen = function(*map(hook_args.__getitem__, argnames)) if argnames \
                else function()
            next(gen)
        except Exception as exc:
            self._skipped(0, exc)
            return await call(*args, **kwargs)
        try:
            result = await call(*args, **kwargs)
        except BaseException as exc:
            return self._unwind([(gen, 0)], None, exc)  # type: ignore[no-any-return]
        try:
            gen.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except BaseException as exc:
            self._ignored(0, exc)
        else:
            self._yielded_twice(gen, 0)
        return result

    async def _around_all(self, hook_args: Mapping[str, Any],
                          call: Callable[P, Awaitable[R]], *args: P.args,
                          **kwargs: P.kwargs) -> R:
        """`around` with any number of wrappers (zero or one only under v1 subscribers)."""
        started = self._enter(hook_args)
        try:
            result = await call(*args, **kwargs)
        except BaseException as exc:
            return self._unwind(started, None, exc)  # type: ignore[no-any-return]
        return self._leave(started, result)  # type: ignore[no-any-return]

    def _enter(self, hook_args: Mapping[str, Any]) -> Started:
        """Start every wrapper, outermost first, with the hook arguments it names."""
        started = []
        for index, (function, argnames, _) in enumerate(self.wrappers):
            try:
                gen = function(*map(hook_args.__getitem__, argnames)) if argnames \
                    else function()
                next(gen)
            except Exception as exc:
                self._skipped(index, exc)
            else:
                started.append((gen, index))
        return started

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

    def _leave(self, started: Started, result: Any) -> Any:
        """Hand the call's result to the wrappers, innermost first (`_unwind` with no
        error, written out: it runs for every message)."""
        while started:
            gen, index = started.pop()
            try:
                gen.send(result)
            except StopIteration as stop:
                result = stop.value
            except BaseException as exc:
                self._ignored(index, exc)
            else:
                self._yielded_twice(gen, index)
        return result

    def _unwind(self, started: Started, result: Any, error: BaseException | None) -> Any:
        """Hand the call's result or error to the wrappers, innermost first; re-raise the
        error unless a wrapper returned a value instead."""
        while started:
            gen, index = started.pop()
            try:
                if error is None:
                    gen.send(result)
                else:
                    gen.throw(error)
            except StopIteration as stop:
                result, error = stop.value, None
            except BaseException as exc:
                if exc is not error:
                    self._ignored(index, exc)
            else:
                self._yielded_twice(gen, index)
        if error is not None:
            raise error
        return result

    def _ignored(self, index: int, exc: BaseException) -> None:
        """Wrapper `index` raised after the call: logged; the result stands."""
        logger.error("plugin %s raised in %s after the call; ignored",
                     self.wrappers[index][2], self.name, exc_info=exc)

    def _yielded_twice(self, gen: Gen, index: int) -> None:
        """Wrapper `index` yielded a second time: closed and logged; the result stands."""
        gen.close()
        logger.error("plugin %s: %s wrapper yielded twice; ignored", self.wrappers[index][2],
                     self.name)
