"""Router and actors: which function handles which job name, in which queue."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict, TypeVar, overload

from repid._validation import check_name
from repid.config import Config
from repid.converter import ConverterT, make_converter
from repid.dependencies.resolver import Injection, injections_of

if TYPE_CHECKING:
    from typing_extensions import Unpack

FnT = TypeVar("FnT", bound=Callable[..., Any])

logger = logging.getLogger("repid.router")


def _where(fn: Callable[..., Any]) -> str:
    """`module.qualname` of a function, to name it in a message."""
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


class ActorResult(NamedTuple):
    """The outcome of one actor run: the return value (`data`) or the `exception`.
    `reporting_done` is True when the actor settled its message itself (an eager
    response), as in repid 1.x: the worker then neither settles it nor stores `data`.
    A named tuple, as in 1.x (and about a tenth of a frozen dataclass's cost to make,
    once per message)."""

    data: Any
    success: bool
    exception: BaseException | None
    started_when: datetime
    finished_when: datetime
    reporting_done: bool = False


@dataclass(eq=False)
class Actor:
    """A function registered to handle jobs named `name` from `queue`."""

    fn: Callable[..., Any]
    name: str
    queue: str = "default"
    retry_policy: Callable[[int], Any] | None = None
    run_in_process: bool = False
    converter: ConverterT = field(init=False)
    converter_class: type[ConverterT] | None = None
    #: dead-letter a message delivered this many times without being settled (None: the
    #: broker's `max_deliveries`)
    max_deliveries: int | None = None
    injections: tuple[Injection, ...] = field(init=False)
    is_async: bool = field(init=False)
    #: what the worker calls; `fn` unless replaced (the pytest plugin puts a mock here)
    call: Callable[..., Any] = field(init=False)

    def __post_init__(self) -> None:
        check_name(self.name, "actor name")
        check_name(self.queue, "queue name")
        self.is_async = inspect.iscoroutinefunction(self.fn)
        self.call = self.fn
        if self.max_deliveries is not None and self.max_deliveries < 1:
            raise ValueError(f"actor {self.name!r}: max_deliveries is {self.max_deliveries}; "
                             "it must be at least 1")
        if self.run_in_process and self.is_async:
            raise ValueError(f"actor {self.name!r}: run_in_process=True needs a sync "
                             "function (async actors already run on the event loop)")
        self.injections = injections_of(self.fn)
        self.converter = make_converter(self.converter_class or Config.CONVERTER, self.fn,
                                        frozenset(i.name for i in self.injections))

    def __repr__(self) -> str:
        return f"Actor(name={self.name!r}, queue={self.queue!r})"


class ActorOptions(TypedDict, total=False):
    """The options `Router.actor(...)` takes, each by keyword and each optional."""

    #: the job name it handles; default: the function's name
    name: str | None
    #: the queue its jobs are taken from; default: "default"
    queue: str
    #: takes the retry number, returns the delay before that retry (a timedelta or
    #: seconds); default: the `repid_retry_delay` hooks, answered last by the default
    #: exponential backoff
    retry_policy: Callable[[int], Any] | None
    #: run a sync function in a process pool instead of a thread pool; default: False
    run_in_process: bool
    #: the class that turns a job's arguments into the function's (`repid.ConverterT`);
    #: default: `Config.CONVERTER`
    converter: type[ConverterT] | None
    #: dead-letter a message delivered this many times without being settled (a job that
    #: kills its worker); default: the broker's `max_deliveries`
    max_deliveries: int | None


class Router:
    """A collection of actors. Include routers in a Worker (or in other routers)."""

    def __init__(self) -> None:
        self.actors: dict[str, Actor] = {}

    @overload
    def actor(self, fn: FnT) -> FnT: ...

    @overload
    def actor(self, **options: Unpack[ActorOptions]) -> Callable[[FnT], FnT]: ...

    def actor(
        self,
        fn: FnT | None = None,
        *,
        name: str | None = None,
        queue: str = "default",
        retry_policy: Callable[[int], Any] | None = None,
        run_in_process: bool = False,
        converter: type[ConverterT] | None = None,
        max_deliveries: int | None = None,
    ) -> FnT | Callable[[FnT], FnT]:
        """Register a function as an actor; it is returned unchanged.

        `name` defaults to the function's name; `retry_policy` takes the retry number and
        returns a timedelta or seconds; sync functions run in a thread pool, or in a
        process pool with `run_in_process=True`. `max_deliveries` overrides the broker's
        limit of deliveries without a settle (a job that kills its worker) for this actor.
        """

        def register(f: FnT) -> FnT:
            actor = Actor(f, name or f.__name__, queue, retry_policy, run_in_process,
                          converter, max_deliveries)
            self._add(actor)
            return f

        return register(fn) if fn is not None else register

    def _add(self, actor: Actor) -> None:
        """Register `actor`; as in repid 1.x, the one registered last under a name handles
        its jobs, with a warning naming both functions."""
        existing = self.actors.get(actor.name)
        if existing is not None and existing.fn is not actor.fn:
            logger.warning("two actors are named %r: %s replaces %s, which will not run; "
                           "give one of them another name= if both should",
                           actor.name, _where(actor.fn), _where(existing.fn))
        self.actors[actor.name] = actor

    def include_router(self, router: Router) -> None:
        """Add every actor of `router` to this one."""
        for actor in router.actors.values():
            self._add(actor)

    @property
    def topics_by_queue(self) -> dict[str, frozenset[str]]:
        """Queue name -> the job names its actors handle."""
        out: dict[str, set[str]] = {}
        for actor in self.actors.values():
            out.setdefault(actor.queue, set()).add(actor.name)
        return {q: frozenset(t) for q, t in out.items()}
