"""Moved to `repid.worker.runner`; this name is kept so that older imports work."""

from repid.worker.runner import *  # noqa: F403
