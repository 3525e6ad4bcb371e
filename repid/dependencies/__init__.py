"""Dependency injection for actors: Depends and the resolver."""

from repid.dependencies.depends import Depends

__all__ = ["Depends"]
