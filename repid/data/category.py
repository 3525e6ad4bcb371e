"""Which part of a queue a message lives in."""

from __future__ import annotations

from enum import Enum


class MessageCategory(str, Enum):
    """NORMAL: ready to run; DELAYED: waiting for its time; DEAD: in the dead-letter queue."""

    NORMAL = "normal"
    DELAYED = "delayed"
    DEAD = "dead"
