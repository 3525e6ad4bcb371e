"""The call-through: how a call passes through the plugins around it.

`around(...)` turns a declared method into a plain `async def` that calls the object's own
implementation (`_enqueue` for `enqueue`, ...) and, when plugins or v1 subscribers are
there, drives the hook's `HookChain` around it. It is built once per method, at class
creation, with the declared method's own parameters (like `dataclasses` builds
`__init__`), so a call costs no coroutine and no argument packing more than the
implementation's own, and with no plugin one `is None` check. Every around call of repid
goes through it: the broker calls, `Consumer.__anext__` (`repid_consume`) and the
worker's actor run (`repid_actor_run`).
"""

from __future__ import annotations

import functools
import inspect
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

#: the body of every call-through; {params} and {args} are the declared method's
_TEMPLATE = """\
async def {name}(self, {params}):
    {check}chain = chains(self).{event}
    if chain is None:
        return await self.{implementation}({args})
    hook_kwargs = hook_args(self, {args})
    if chain.subscribers:
        return await chain.run(self.{implementation}, ({args}), {{}}, hook_kwargs)
    if chain.single:
        gen = chain.enter_one(hook_kwargs)
        try:
            result = await self.{implementation}({args})
        except BaseException as exc:
            return chain.fail_one(gen, exc)
        return chain.leave_one(gen, result)
    started = chain.enter(hook_kwargs)
    try:
        result = await self.{implementation}({args})
    except BaseException as exc:
        return chain.fail(started, exc)
    return chain.leave(started, result)
"""


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
    `self.<implementation>(...)` with its own arguments, inside the chain that
    `chains(self)` holds for `event`; `hook_args(self, ...)` gives the hook's keyword
    arguments, built only when something runs around the call. `check(self, ...)`, when
    given, runs first and may refuse the call by raising.
    """

    def decorate(declared: Callable[Concatenate[S, P], Awaitable[R]]
                 ) -> Callable[Concatenate[S, P], Awaitable[R]]:
        names = list(inspect.signature(declared).parameters)[1:]  # without self
        defaults = {f"_default_{name}": parameter.default for name, parameter
                    in inspect.signature(declared).parameters.items()
                    if parameter.default is not inspect.Parameter.empty}
        params = ", ".join(f"{name}=_default_{name}" if f"_default_{name}" in defaults
                           else name for name in names)
        args = "".join(f"{name}, " for name in names)
        source = _TEMPLATE.format(
            name=declared.__name__, params=params, args=args, event=event,
            implementation=implementation,
            check=f"check(self, {args})\n    " if check is not None else "")
        namespace: dict[str, Any] = {"chains": chains, "hook_args": hook_args,
                                     "check": check, **defaults}
        exec(compile(source, f"<around {event}>", "exec"), namespace)
        method = namespace[declared.__name__]
        functools.update_wrapper(method, declared)
        result: Callable[Concatenate[S, P], Awaitable[R]] = method
        return result

    return decorate
