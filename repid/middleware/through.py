"""The call-through: how a call passes through the plugins around it.

`around(...)` turns a declared method into a plain `async def` that calls the object's own
implementation (`_enqueue` for `enqueue`, ...) and, when plugins or v1 subscribers are
there, drives the hook's `HookChain` around it. It is built once per method, at class
creation, so a call costs no coroutine more than the implementation's own, and with no
plugin one `is None` check. Every around call of repid goes through it: the broker calls,
`Consumer.__anext__` (`repid_consume`) and the worker's actor run (`repid_actor_run`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

if TYPE_CHECKING:
    from repid.middleware.manager import Chains

S = TypeVar("S")
P = ParamSpec("P")
R = TypeVar("R")

#: where a broker keeps its chains (`repid.middleware.hooked.Hooked`)
own_chains: Callable[[Any], Chains] = attrgetter("_chains")
#: where a consumer finds its broker's chains
chains_of_broker: Callable[[Any], Chains] = attrgetter("broker._chains")


def around(
    event: str,
    implementation: str,
    hook_args: Callable[..., dict[str, Any]],
    chains: Callable[[Any], Chains] = own_chains,
    check: Callable[..., None] | None = None,
) -> Callable[[Callable[Concatenate[S, P], Awaitable[R]]],
              Callable[Concatenate[S, P], Awaitable[R]]]:
    """Decorate a method declaring the around call `event` (a `Chains` slot).

    The method's body is not used: the decorated method awaits
    `getattr(self, implementation)(*args, **kwargs)` inside the chain that `chains(self)`
    holds for `event`; `hook_args(self, *args, **kwargs)` gives the hook's keyword
    arguments, built only when something runs around the call. `check(self, *args,
    **kwargs)`, when given, runs first and may refuse the call by raising.
    """

    def decorate(declared: Callable[Concatenate[S, P], Awaitable[R]]
                 ) -> Callable[Concatenate[S, P], Awaitable[R]]:
        async def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
            if check is not None:
                check(self, *args, **kwargs)
            call: Callable[P, Awaitable[R]] = getattr(self, implementation)
            chain = getattr(chains(self), event)
            if chain is None:
                return await call(*args, **kwargs)
            hook_kwargs = hook_args(self, *args, **kwargs)
            result: R
            if chain.subscribers:
                result = await chain.run(call, args, kwargs, hook_kwargs)
                return result
            started = chain.enter(hook_kwargs)
            try:
                result = await call(*args, **kwargs)
            except BaseException as exc:
                result = chain.fail(started, exc)
                return result
            result = chain.leave(started, result)
            return result

        functools.update_wrapper(method, declared)
        return method

    return decorate
