"""The Middleware: one pluggy PluginManager per Connection, and the cached hook chains.

Brokers read `middleware.chains.<call>`; it is None when nothing is registered for that
call, so the no-plugin path costs one check. The chains are rebuilt whenever a plugin or a
subscriber is added or removed.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pluggy

from repid.middleware import hookspecs
from repid.middleware._chain import HookChain, Wrapper
from repid.middleware._v1 import (
    Subscriber,
    collect,
    make_subscriber,
    parse_name,
    subscribers_of,
    unknown_name,
)

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
        """Register `plugin`, or refuse it (`check_plugin`): then it is not registered."""
        result = super().register(plugin, name)
        try:
            check_plugin(self, plugin)
        except TypeError:
            super().unregister(plugin)
            raise
        finally:
            self._on_change()
        return result

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        result = super().unregister(plugin, name)
        self._on_change()
        return result


def check_plugin(pm: pluggy.PluginManager, plugin: object) -> None:
    """Raise TypeError, saying what to change, for the first mistake of a plugin just
    registered on `pm`:

    - a method named `repid_*` that is not a hook (marked `@repid.hookimpl`, found by
      pluggy's `check_pending`, or not marked), naming the closest hook;
    - a hook method not marked `@repid.hookimpl` (it would never be called);
    - an around hook that is not `wrapper=True`, or a hook of another kind that is a
      wrapper (`hookspecs.KINDS`: `Kind.wrapper`).

    A hook marked `optionalhook=True` is pluggy's way to say it may not exist: allowed.
    """
    label = _label(pm, plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError:
        unknown = [caller.name for caller in pm.get_hookcallers(plugin) or ()
                   if not caller.has_spec()]
        raise TypeError(_not_a_hook(label, unknown[0] if unknown else "?")) from None
    implemented = {caller.name for caller in pm.get_hookcallers(plugin) or ()}
    for attr in dir(plugin):
        if not attr.startswith("repid_") or attr in implemented:
            continue
        if not inspect.isroutine(getattr(plugin, attr, None)):
            continue
        if attr not in hookspecs.HOOK_KINDS:
            raise TypeError(_not_a_hook(label, attr))
        kind = hookspecs.KINDS[hookspecs.HOOK_KINDS[attr]]
        raise TypeError(
            f"plugin {label}: {attr} is not marked, so it would never be called; mark it "
            f"{_marker(kind)}")
    for caller in pm.get_hookcallers(plugin) or ():
        if caller.name not in hookspecs.HOOK_KINDS:
            continue  # an `optionalhook=True` implementation of no hook
        kind = hookspecs.KINDS[hookspecs.HOOK_KINDS[caller.name]]
        for impl in caller.get_hookimpls():
            if impl.plugin is not plugin:
                continue
            if impl.wrapper if kind.wrapper else not (impl.wrapper or impl.hookwrapper):
                continue
            article = "an" if kind.name[0] in "aeiou" else "a"
            raise TypeError(
                f"plugin {label}: {caller.name} is {article} {kind.name} hook: mark it "
                f"{_marker(kind)}, {kind.shape}")


def _label(pm: pluggy.PluginManager, plugin: object) -> str:
    """The plugin's class (or module), and the name it was registered under if one was
    given."""
    what = getattr(plugin, "__name__", None) if inspect.ismodule(plugin) else None
    what = what or type(plugin).__qualname__
    name = pm.get_name(plugin)
    return what if name in (None, str(id(plugin))) else f"{name!r} ({what})"


def _marker(kind: hookspecs.Kind) -> str:
    return kind.marker if kind.wrapper else f"{kind.marker} (not wrapper=True)"


def _not_a_hook(label: str, method: str) -> str:
    """The error for a `repid_*` method that is not a hook, naming the closest one."""
    close = difflib.get_close_matches(method, hookspecs.HOOKS, n=1)
    hint = f"did you mean {close[0]}?" if close else f"the hooks are {', '.join(hookspecs.HOOKS)}"
    return (f"plugin {label}: {method} is not a repid hook ({hint}); every hook is listed "
            "in repid.middleware.hookspecs and docs/hooks.md. Rename it, or drop the "
            "repid_ prefix of a method that is not meant as a hook")


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
        """Register a plugin object whose methods are marked with `repid.hookimpl`; a
        plugin with a mistake (`check_plugin`) is refused with a TypeError saying what to
        change, and is not registered."""
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
            warnings.warn(unknown_name(fn.__name__), stacklevel=2)
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
        """pluggy's hook caller. Call hooks through `call_first`, `call_lifecycle` and
        `collect` instead: they keep each kind's promise when a plugin raises."""
        return self.pm.hook

    def _answers(self, name: str, kind: str,
                 kwargs: dict[str, Any]) -> Iterator[tuple[str, Any]]:
        """Each plugin's answer to hook `name` of kind `kind`, in pluggy's call order (the
        reverse of `get_hookimpls()`), as (plugin label, value); a plugin that raises is
        logged, naming it, and skipped."""
        if hookspecs.HOOK_KINDS.get(name) != kind:
            raise ValueError(f"{name} is not a {kind} hook; the {kind} hooks are "
                             f"{', '.join(hookspecs.hooks_of(kind))}")
        for impl in reversed(getattr(self.pm.hook, name).get_hookimpls()):
            label = _label(self.pm, impl.plugin)
            try:
                value = impl.function(*[kwargs[a] for a in impl.argnames])
            except Exception:
                logger.exception("plugin %s raised in %s (a %s hook); skipped", label, name,
                                 kind)
                continue
            yield label, value

    def call_first(self, name: str, **kwargs: Any) -> Any:
        """The answer of a decision hook: the first plugin's, in call order, that is not
        None; a plugin that raises, or answers with a type the hook does not take
        (`hookspecs.DECISION_ANSWERS`), is logged and the next one asked. None (the
        default decision) when no plugin answers. So what this returns is None or of a
        type the hook takes."""
        kwargs.setdefault("connection", self.connection)
        for plugin, value in self._answers(name, hookspecs.DECISION, kwargs):
            if value is None:
                continue
            answer = hookspecs.DECISION_ANSWERS[name]
            if answer.accepts(value):
                return value
            logger.error("plugin %s answered %s with %r, which that hook does not take; "
                         "ignored, as no opinion. Return %s from it, or None for no "
                         "opinion", plugin, name, value, answer.text)
        return None

    async def call_lifecycle(self, name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook on every plugin, awaiting what they return; one that
        raises (or whose awaitable does) is logged and the others are still called."""
        for plugin, value in self._answers(name, hookspecs.LIFECYCLE, kwargs):
            if inspect.isawaitable(value):
                try:
                    await value
                except Exception:
                    logger.exception("plugin %s raised in %s (a lifecycle hook); skipped",
                                     plugin, name)

    def collect(self, name: str, **kwargs: Any) -> list[Any]:
        """Every non-None answer of a contribution hook; a plugin that raises is logged
        and contributes nothing."""
        return [v for _, v in self._answers(name, hookspecs.CONTRIBUTION, kwargs)
                if v is not None]

    def _rebuild(self) -> None:
        for event, hook_name in zip(hookspecs.AROUND_CALLS, hookspecs.AROUND_HOOKS,
                                    strict=True):
            impls = getattr(self.pm.hook, hook_name).get_hookimpls()
            wrappers: tuple[Wrapper, ...] = tuple(
                (impl.function, tuple(impl.argnames), _label(self.pm, impl.plugin))
                for impl in reversed(impls) if impl.wrapper)
            subscribers = subscribers_of(
                tuple(self._subscribers.get(("before", event), ())),
                tuple(self._subscribers.get(("after", event), ())))
            chain = None
            if wrappers or subscribers is not None:
                chain = HookChain(event, hook_name, wrappers, subscribers)
            setattr(self.chains, event, chain)

