"""Moved to `repid.worker._health`; this name is kept so that older imports work."""

from repid.worker._health import *  # noqa: F403
