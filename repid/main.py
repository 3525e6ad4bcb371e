"""Moved to `repid.app` (the `Repid` binder); this name is kept so that older imports
(`from repid.main import Repid`, as in repid 1.x) work."""

from repid.app import Repid, resolve_connection

__all__ = ["Repid", "resolve_connection"]
