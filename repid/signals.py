"""Moved to `repid.worker.signals`; this name is kept so that older imports work."""

from repid.worker.signals import *  # noqa: F403
