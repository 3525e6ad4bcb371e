"""Moved to `repid.worker._isolation`; this name is kept so that older imports work."""

from repid.worker._isolation import *  # noqa: F403
