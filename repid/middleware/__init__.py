"""Middleware: the pluggy plugin manager, the hook contract and the v1 adapter.

What users need from here is `hookimpl` (to mark a plugin's hooks) and `Middleware` (a
connection's plugins and v1 subscribers); the chains are internal
(`repid.middleware._manager`).
"""

from repid.middleware._manager import Middleware, hookimpl

__all__ = ["Middleware", "hookimpl"]
