"""Moved to `repid.worker.health`; this name is kept so that older imports work."""

from repid.worker.health import *  # noqa: F403
