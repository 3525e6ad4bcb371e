"""What `repid migrate-v1` found or moved, per queue and for the buckets, and how much a
run may move (`Budget`)."""

from __future__ import annotations

from dataclasses import dataclass, field

#: the categories of messages, in the order they are reported
CATEGORIES = ("ready", "delayed", "dead")


@dataclass
class QueueReport:
    """One queue: messages per category (found by a dry run, moved by `--apply`), the ids
    left where they were (`skipped`, with why) and anything else worth saying (`notes`)."""

    queue: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class BucketReport:
    """Buckets written by repid 1.x in one Redis database: counts per kind (`args`,
    `result`), those left where they were (`skipped`, with why)."""

    where: str
    counts: dict[str, int] = field(default_factory=lambda: {"args": 0, "result": 0})
    skipped: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Budget:
    """How many more messages and buckets a run may move (None: no limit); lets a run stop
    part-way on purpose (`--limit`), as an interruption would."""

    def __init__(self, limit: int | None = None) -> None:
        self.left = limit

    def spend(self) -> bool:
        """False once the budget is spent; else count one more move."""
        if self.left is None:
            return True
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    @property
    def spent(self) -> bool:
        return self.left is not None and self.left <= 0
