"""Working out, once per function, which parameters are injected; filling them per message."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, get_args, get_origin

from repid.dependencies.depends import Depends
from repid.dependencies.hints import hints_of

if TYPE_CHECKING:
    from repid.message import Message


@dataclass(frozen=True, slots=True)
class Injection:
    """One injected parameter: the message itself, or a dependency's value."""

    name: str
    depends: Depends | None  # None: the MessageDependency


def _is_message_type(annotation: Any) -> bool:
    from repid.message import Message

    return isinstance(annotation, type) and issubclass(annotation, Message)


@functools.lru_cache(maxsize=1024)
def injections_of(fn: Callable[..., Any]) -> tuple[Injection, ...]:
    """The parameters of `fn` that repid fills: `Depends(...)` defaults, `Annotated[T,
    Depends(...)]`, and those annotated `MessageDependency`."""
    hints = hints_of(fn)
    found = []
    for p in inspect.signature(fn).parameters.values():
        hint = hints.get(p.name, p.annotation)
        if isinstance(hint, str) and ("Depends(" in hint or hint.replace(" ", "").startswith(
                ("Annotated[", "typing.Annotated[", "t.Annotated["))):
            raise TypeError(
                f"cannot resolve the type hint of parameter {p.name!r} of "
                f"{getattr(fn, '__qualname__', fn)} ({hint!r}): define the dependency at "
                "module level, or use a default value `= Depends(fn)` instead"
            )
        if isinstance(p.default, Depends):
            found.append(Injection(p.name, p.default))
        elif get_origin(hint) is Annotated and any(isinstance(a, Depends)
                                                   for a in get_args(hint)[1:]):
            dep = next(a for a in get_args(hint)[1:] if isinstance(a, Depends))
            found.append(Injection(p.name, dep))
        elif _is_message_type(hint) or (isinstance(hint, str) and hint.endswith(
                ("MessageDependency", "Message"))):
            found.append(Injection(p.name, None))
    return tuple(found)


async def call_sync(fn: Callable[..., Any], kwargs: dict[str, Any],
                    executor: Executor | None) -> Any:
    """Run a sync function off the event loop, keeping the caller's contextvars (and so
    the current trace span) when it runs in a thread."""
    loop = asyncio.get_running_loop()
    if executor is not None:  # a process pool: contextvars do not cross processes
        return await loop.run_in_executor(executor, functools.partial(fn, **kwargs))
    ctx = contextvars.copy_context()
    return await loop.run_in_executor(None, functools.partial(ctx.run, fn, **kwargs))


class Resolver:
    """Fills injected parameters for one message; each Depends runs at most once per
    message, however many functions ask for it."""

    def __init__(self, message: Message, process_pool: Callable[[], Executor]) -> None:
        self.message = message
        self.process_pool = process_pool
        self.cache: dict[int, Any] = {}

    async def fill(self, injections: tuple[Injection, ...]) -> dict[str, Any]:
        values = {}
        for item in injections:
            if item.depends is None:
                values[item.name] = self.message
            else:
                values[item.name] = await self.value_of(item.depends)
        return values

    async def value_of(self, dep: Depends) -> Any:
        key = id(dep)
        if key in self.cache:
            return self.cache[key]
        fn = dep.fn
        kwargs = await self.fill(injections_of(fn))
        if inspect.iscoroutinefunction(fn):
            value = await fn(**kwargs)
        else:
            value = await call_sync(fn, kwargs,
                                    self.process_pool() if dep.run_in_process else None)
        self.cache[key] = value
        return value
