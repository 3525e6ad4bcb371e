"""Message priorities: a larger value is taken first."""

from __future__ import annotations

from enum import IntEnum


class PrioritiesT(IntEnum):
    """How urgent a job is. Brokers take HIGH before MEDIUM before LOW."""

    LOW = 0
    MEDIUM = 1
    HIGH = 2
