"""The call-through: how a call passes through the plugins around it.

`around(...)` turns a declared method into a plain `async def` that calls the object's own
implementation (`_enqueue` for `enqueue`, ...) and, when plugins or v1 subscribers are
there, drives the hook's `HookChain` around it. It is built once per method, at class
creation, with the declared method's own parameters (like `dataclasses` builds
`__init__`), so a call costs no coroutine and no argument packing more than the
implementation's own, and with no plugin one `is None` check. Every around call of repid
goes through it: the broker calls, `Consumer.__anext__` (`repid_consume`) and the
worker's actor run (`repid_actor_run`).

Each declaration also says how the hook's arguments are read from the call's
(`HookArgs`: an expression per hook parameter, over `self` and the method's parameters).
It is recorded as the event's `CallSite`, from which a chain builds its `enter`: a
function that reads only the arguments its wrappers name, and passes them positionally
(see `repid.middleware.chain`). No dictionary of hook arguments is built on that path.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
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

#: a hook's keyword arguments, each as a Python expression over `self` and the declared
#: method's parameters (`{"queue": "key.queue", "broker": "self"}`)
HookArgs = Mapping[str, str]


@dataclass(frozen=True)
class CallSite:
    """One declared around call: the method's parameters (without `self`) and how each
    argument of its hook is read from them."""

    event: str
    params: tuple[str, ...]
    hook_args: HookArgs

    def compile(self, name: str, body: list[str], namespace: dict[str, Any]) -> Any:
        """A function `name(self, <params>)` with these body lines, in `namespace`."""
        source = f"def {name}(self, {', '.join(self.params)}):\n" + indented(body, 4)
        exec(compile(source, f"<{name} {self.event}>", "exec"), namespace)
        return namespace[name]

    @functools.cached_property
    def kwargs_builder(self) -> Callable[..., dict[str, Any]]:
        """`f(self, <params>)`: every hook argument, as a dict (the v1 subscribers' path)."""
        items = ", ".join(f"{name!r}: {expr}" for name, expr in self.hook_args.items())
        builder: Callable[..., dict[str, Any]] = self.compile(
            "hook_kwargs", [f"return {{{items}}}"], {})
        return builder


#: every declared around call, by event (`Chains` slot); filled as the classes that
#: declare them are created
SITES: dict[str, CallSite] = {}

#: how the only wrapper of a chain gets the call's `result` (`state`: its generator, None
#: when it was skipped): what it returns replaces the result; raising something else or
#: yielding again is logged and ignored. One text, for two uses: written out in every
#: call-through, so that it costs no call, and compiled as the chain's `leave` for one
#: wrapper (`repid.middleware.chain`)
LEAVE_ONE = """\
if state is None:
    return result
try:
    state.send(result)
except StopIteration as stop:
    return stop.value
except BaseException as exc:
    return chain.ignored(0, exc, result)
return chain.yielded_twice(state, 0, result)
"""


def indented(lines: list[str], spaces: int) -> str:
    """Source lines, each indented by `spaces` and ended."""
    return "".join(" " * spaces + line + "\n" for line in lines)


#: the body of every call-through; {params} and {args} are the declared method's
_TEMPLATE = """\
async def {name}(self, {params}):
    {check}chain = chains(self).{event}
    if chain is None:
        return await self.{implementation}({args})
    if chain.subscribers:
        return await chain.run(self.{implementation}, self, {args})
    state = chain.enter(self, {args})
    try:
        result = await self.{implementation}({args})
    except BaseException as exc:
        return chain.fail(state, exc)
    if chain.single:
""" + indented(LEAVE_ONE.splitlines(), 8) + """\
    return chain.leave(state, result)
"""


def around(
    event: str,
    implementation: str,
    hook_args: HookArgs,
    chains: Callable[[Any], Chains] = own_chains,
    check: Callable[..., None] | None = None,
) -> Callable[[Callable[Concatenate[S, P], Awaitable[R]]],
              Callable[Concatenate[S, P], Awaitable[R]]]:
    """Decorate a method declaring the around call `event` (a `Chains` slot).

    The method's body is not used: the decorated method awaits
    `self.<implementation>(...)` with its own arguments, inside the chain that
    `chains(self)` holds for `event`; `hook_args` says how each argument of the hook is
    read from the call's, evaluated only when something runs around the call.
    `check(self, ...)`, when given, runs first and may refuse the call by raising.
    """

    def decorate(declared: Callable[Concatenate[S, P], Awaitable[R]]
                 ) -> Callable[Concatenate[S, P], Awaitable[R]]:
        signature = inspect.signature(declared).parameters
        names = list(signature)[1:]  # without self
        defaults = {f"_default_{name}": parameter.default for name, parameter
                    in signature.items() if parameter.default is not inspect.Parameter.empty}
        params = ", ".join(f"{name}=_default_{name}" if f"_default_{name}" in defaults
                           else name for name in names)
        args = "".join(f"{name}, " for name in names)
        source = _TEMPLATE.format(
            name=declared.__name__, params=params, args=args, event=event,
            implementation=implementation,
            check=f"check(self, {args})\n    " if check is not None else "")
        namespace: dict[str, Any] = {"chains": chains, "check": check, **defaults}
        exec(compile(source, f"<around {event}>", "exec"), namespace)
        method = namespace[declared.__name__]
        functools.update_wrapper(method, declared)
        SITES[event] = CallSite(event, tuple(names), dict(hook_args))
        result: Callable[Concatenate[S, P], Awaitable[R]] = method
        return result

    return decorate
