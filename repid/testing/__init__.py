"""The pytest plugin's public names, where repid 1.x kept them.

The fixture types (`EventLog`, `GetEventLogT`, `GetInMemoryQueueT`, `GetMockedActorT`)
import without pytest. The fixtures themselves (`repid_app`, ...) are looked up on first
use, so `import repid` never imports pytest; the plugin registers them in every pytest
run anyway, importing them is only needed by code written that way for 1.x.
"""

from __future__ import annotations

from typing import Any

from repid.testing.types import EventLog, GetEventLogT, GetInMemoryQueueT, GetMockedActorT

FIXTURES = ("repid_app", "repid_connection", "repid_declare_all_known_queues",
            "repid_get_event_log", "repid_get_in_memory_queue", "repid_get_mocked_actor")

__all__ = ["EventLog", "GetEventLogT", "GetInMemoryQueueT", "GetMockedActorT", *FIXTURES]


def __getattr__(name: str) -> Any:
    if name in FIXTURES:
        from repid.testing import plugin

        return getattr(plugin, name)
    raise AttributeError(f"module 'repid.testing' has no attribute {name!r}")
