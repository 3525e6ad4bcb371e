"""`from repid.actor import ActorResult`, where repid 1.x's middleware guide imports it.

The outcome of a run is defined with the router (`repid.router.ActorResult`); this module
names it where 1.x code looks for it, with `ActorData` (1.x's name for an actor)."""

from __future__ import annotations

from repid.router import Actor, ActorResult

#: repid 1.x's name for a registered actor
ActorData = Actor

__all__ = ["ActorData", "ActorResult"]
