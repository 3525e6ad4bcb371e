"""Moved to `repid.worker._signals`; this name is kept so that older imports work."""

from repid.worker._signals import *  # noqa: F403
