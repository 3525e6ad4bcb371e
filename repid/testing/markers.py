"""What the `repid` markers on a test ask for, read as repid 1.x read them.

A test may carry the marker on the function, its class and its module (`pytestmark`);
markers nearer the test come first. Each argument is read this way:

- `autoconnection` comes from the nearest marker (a bare `@pytest.mark.repid` on the
  function binds the app even when the module says `autoconnection=False`); default True.
- `declare_all_known_queues` comes from the nearest marker that sets it; default False,
  as in repid 1.x.
- `routers` gathers the routers of every marker, so a function marker adds to the
  module's routers; when two actors share a name, the one nearer the test wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from repid.router import Router

MARKER = "repid"
ARGUMENTS = ("routers", "declare_all_known_queues", "autoconnection")


@dataclass(frozen=True, slots=True)
class MarkerSettings:
    """The merged arguments of a test's `repid` markers (defaults when it has none)."""

    routers: tuple[Router, ...] = ()
    declare_all_known_queues: bool = False
    autoconnection: bool = True


def _checked(marker: pytest.Mark) -> dict[str, Any]:
    if marker.args:
        raise TypeError(f"the repid marker takes keyword arguments only, got {marker.args!r}; "
                        "write @pytest.mark.repid.with_args(routers=[router])")
    unknown = set(marker.kwargs) - set(ARGUMENTS)
    if unknown:
        raise TypeError(f"repid marker got unknown arguments {sorted(unknown)}; it takes "
                        f"{', '.join(ARGUMENTS)}")
    kwargs = dict(marker.kwargs)
    routers = kwargs.get("routers") or ()  # None too, as repid 1.x took it
    if isinstance(routers, Iterable):
        kwargs["routers"] = routers = list(routers)
    if not isinstance(routers, list) or not all(isinstance(r, Router) for r in routers):
        raise TypeError(f"the repid marker's routers must be a list of repid.Router, got "
                        f"{routers!r}; write with_args(routers=[router])")
    return kwargs


def read_markers(markers: Iterable[pytest.Mark]) -> MarkerSettings | None:
    """The settings from a test's markers, nearest first; None when there are none."""
    found = [_checked(m) for m in markers]
    if not found:
        return None
    declare = next((kw["declare_all_known_queues"] for kw in found
                    if "declare_all_known_queues" in kw), False)
    routers = tuple(r for kw in found for r in kw.get("routers", ()))
    return MarkerSettings(routers, bool(declare), bool(found[0].get("autoconnection", True)))


def settings_of(node: pytest.Item) -> MarkerSettings | None:
    """`read_markers` for a collected test."""
    return read_markers(node.iter_markers(MARKER))
