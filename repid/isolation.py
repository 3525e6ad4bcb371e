"""Moved to `repid.worker.isolation`; this name is kept so that older imports work."""

from repid.worker.isolation import *  # noqa: F403
