"""Middleware: the pluggy plugin manager, the hook contract and the v1 adapter."""

from repid.middleware.manager import NO_CHAINS, Chains, Middleware, hookimpl

__all__ = ["NO_CHAINS", "Chains", "Middleware", "hookimpl"]
