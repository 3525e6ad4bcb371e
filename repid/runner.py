"""Moved to `repid.worker._runner`; this name is kept so that older imports work."""

from repid.worker._runner import *  # noqa: F403
