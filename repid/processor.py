"""Moved to `repid.worker._processor`; this name is kept so that older imports work."""

from repid.worker._processor import *  # noqa: F403
