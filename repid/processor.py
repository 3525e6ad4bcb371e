"""Moved to `repid.worker.processor`; this name is kept so that older imports work."""

from repid.worker.processor import *  # noqa: F403
