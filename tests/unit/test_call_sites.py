"""Every around call declares how each argument of its hook is read from the call, so a
plugin may name any argument its hook's spec has."""

from __future__ import annotations

import inspect

import repid  # noqa: F401  (declares every around call)
from repid.middleware import hookspecs
from repid.middleware.through import SITES


def test_every_around_call_is_declared_with_its_hooks_arguments() -> None:
    assert set(SITES) == set(hookspecs.AROUND_CALLS)
    for event, hook_name in zip(hookspecs.AROUND_CALLS, hookspecs.AROUND_HOOKS, strict=True):
        spec = getattr(hookspecs, hook_name)
        expected = set(inspect.signature(spec).parameters)
        assert set(SITES[event].hook_args) == expected, event
