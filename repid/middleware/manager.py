"""The Middleware: one pluggy PluginManager per Connection, and the cached hook chains.

Brokers read `middleware.chains.<call>`; it is None when nothing is registered for that
call, so the no-plugin path costs one check. The chains are rebuilt whenever a plugin or a
subscriber is added or removed.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pluggy

from repid.middleware import hookspecs
from repid.middleware.chain import HookChain, Subscriber, Wrapper
from repid.middleware.compat import collect, make_subscriber, parse_name, v1_values

if TYPE_CHECKING:
    from repid.connection import Connection

logger = logging.getLogger("repid.middleware")

hookimpl = pluggy.HookimplMarker("repid")


class Chains:
    """One slot per around call (`hookspecs.AROUND_CALLS`); None where nothing runs
    around it."""

    __slots__ = hookspecs.AROUND_CALLS

    def __init__(self) -> None:
        for name in hookspecs.AROUND_CALLS:
            setattr(self, name, None)

    consume: HookChain | None
    enqueue: HookChain | None
    requeue: HookChain | None
    queue_declare: HookChain | None
    queue_flush: HookChain | None
    queue_delete: HookChain | None
    ack: HookChain | None
    nack: HookChain | None
    reject: HookChain | None
    get_bucket: HookChain | None
    store_bucket: HookChain | None
    delete_bucket: HookChain | None
    actor_run: HookChain | None


#: chains of a broker that was never given a middleware: nothing runs around its calls
NO_CHAINS = Chains()


class _Manager(pluggy.PluginManager):
    def __init__(self, on_change: Callable[[], None]) -> None:
        super().__init__("repid")
        self._on_change = on_change

    def register(self, plugin: object, name: str | None = None) -> str | None:
        result = super().register(plugin, name)
        _check_wrappers(self, plugin)
        self._on_change()
        return result

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        result = super().unregister(plugin, name)
        self._on_change()
        return result


def _check_wrappers(pm: pluggy.PluginManager, plugin: object) -> None:
    """Refuse a plugin whose around hook is not a wrapper, or whose decision hook is."""
    for hook_name in hookspecs.AROUND_HOOKS + hookspecs.DECISION_HOOKS:
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            if impl.plugin is not plugin:
                continue
            if hook_name in hookspecs.DECISION_HOOKS and (impl.wrapper or impl.hookwrapper):
                pm.unregister(plugin)
                raise TypeError(
                    f"{hook_name} on {impl.plugin_name} is a decision hook: mark it "
                    "@repid.hookimpl (not wrapper=True) and return the answer, or None for "
                    "no opinion")
            if hook_name in hookspecs.AROUND_HOOKS and not impl.wrapper:
                pm.unregister(plugin)
                raise TypeError(
                    f"{hook_name} on {impl.plugin_name} is an around hook: mark it "
                    "@repid.hookimpl(wrapper=True) and write it as a generator that yields once"
                )


class Middleware:
    """Plugins and v1 subscribers of one Connection, and the chains brokers call through."""

    def __init__(self, connection: Connection | None = None) -> None:
        self.connection = connection
        self.chains = Chains()
        self._subscribers: dict[tuple[str, str], list[Subscriber]] = {}
        self.pm = _Manager(self._rebuild)
        self.pm.add_hookspecs(hookspecs)

    # --- registration ---

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object whose methods are marked with `repid.hookimpl`."""
        self.pm.register(plugin, name)

    def unregister(self, plugin: object) -> None:
        self.pm.unregister(plugin)

    def load_entrypoints(self) -> int:
        """Register the plugins installed under the `repid` entry-point group (opt-in)."""
        return self.pm.load_setuptools_entrypoints("repid")

    def add_subscriber(self, fn: Callable[..., Any]) -> None:
        """Add a v1 `before_<event>` / `after_<event>` function (sync or async)."""
        parsed = parse_name(fn.__name__)
        if parsed is None:
            warnings.warn(f"{fn.__name__} matches no repid event; ignored", stacklevel=2)
            return
        self._add(parsed[0], parsed[1], fn)
        self._rebuild()

    def add_middleware(self, obj: Any) -> None:
        """Add every `before_<event>` / `after_<event>` method of an object."""
        for stage, event, fn in collect(obj):
            self._add(stage, event, fn)
        self._rebuild()

    def _add(self, stage: str, event: str, fn: Callable[..., Any]) -> None:
        self._subscribers.setdefault((stage, event), []).append(make_subscriber(fn, stage, event))

    # --- calling ---

    @property
    def hook(self) -> Any:
        """pluggy's hook caller, for decision and lifecycle hooks."""
        return self.pm.hook

    def _answers(self, name: str, kwargs: dict[str, Any]) -> Iterator[tuple[str, Any]]:
        """Each plugin's answer to a non-around hook, in call order, as (plugin, value);
        a plugin that raises is logged and skipped."""
        for impl in reversed(getattr(self.pm.hook, name).get_hookimpls()):
            try:
                value = impl.function(*[kwargs[a] for a in impl.argnames])
            except Exception:
                logger.exception("plugin %s raised in %s; skipped", impl.plugin_name, name)
                continue
            yield impl.plugin_name, value

    def call_first(self, name: str, **kwargs: Any) -> Any:
        """The answer of a decision hook (`firstresult`), called through pluggy; None (the
        default decision) when no plugin answers, or when one raises (logged)."""
        kwargs.setdefault("connection", self.connection)
        try:
            return getattr(self.pm.hook, name)(**kwargs)
        except Exception:
            logger.exception("a plugin raised in %s; the default decision applies", name)
            return None

    async def call_lifecycle(self, name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook on every plugin, awaiting what they return."""
        for plugin, value in self._answers(name, kwargs):
            if inspect.isawaitable(value):
                try:
                    await value
                except Exception:
                    logger.exception("plugin %s raised in %s; ignored", plugin, name)

    def collect(self, name: str, **kwargs: Any) -> list[Any]:
        """Every non-None answer of a hook, for hooks that gather contributions."""
        return [v for _, v in self._answers(name, kwargs) if v is not None]

    def _rebuild(self) -> None:
        for event, hook_name in zip(hookspecs.AROUND_CALLS, hookspecs.AROUND_HOOKS,
                                    strict=True):
            impls = getattr(self.pm.hook, hook_name).get_hookimpls()
            wrappers: tuple[Wrapper, ...] = tuple(
                (impl.function, tuple(impl.argnames), impl.plugin_name)
                for impl in reversed(impls) if impl.wrapper)
            before = tuple(self._subscribers.get(("before", event), ()))
            after = tuple(self._subscribers.get(("after", event), ()))
            chain = None
            if wrappers or before or after:
                chain = HookChain(event, hook_name, wrappers, before, after, v1_values)
            setattr(self.chains, event, chain)

