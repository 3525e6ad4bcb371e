"""A plugin recording every broker call as an EventLog, in call order (as repid 1.x's
event log did: broker calls only, not actor runs)."""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

from repid.middleware import hookimpl
from repid.middleware.compat import EVENTS
from repid.testing.types import EventLog


class EventLogPlugin:
    """Wraps every around hook; `events` lists the calls seen."""

    def __init__(self) -> None:
        self.events: list[EventLog] = []

    def _record(self, event: str, values: dict[str, Any]) -> Generator[None, Any, Any]:
        names = EVENTS[event]
        args = tuple(values[n] for n in names)
        entry = EventLog(event, args, dict(zip(names, args, strict=True)), None, time.time(),
                         time.perf_counter())
        self.events.append(entry)
        result = yield
        entry.result = result
        return result

    @hookimpl(wrapper=True)
    def repid_consume(self) -> Generator[None, Any, Any]:
        return (yield from self._record("consume", {}))

    @hookimpl(wrapper=True)
    def repid_enqueue(self, key: Any, payload: Any, params: Any) -> Generator[None, Any, Any]:
        return (yield from self._record("enqueue", {"key": key, "payload": payload,
                                                    "params": params}))

    @hookimpl(wrapper=True)
    def repid_requeue(self, key: Any, payload: Any, params: Any) -> Generator[None, Any, Any]:
        return (yield from self._record("requeue", {"key": key, "payload": payload,
                                                    "params": params}))

    @hookimpl(wrapper=True)
    def repid_ack(self, key: Any) -> Generator[None, Any, Any]:
        return (yield from self._record("ack", {"key": key}))

    @hookimpl(wrapper=True)
    def repid_nack(self, key: Any) -> Generator[None, Any, Any]:
        return (yield from self._record("nack", {"key": key}))

    @hookimpl(wrapper=True)
    def repid_reject(self, key: Any) -> Generator[None, Any, Any]:
        return (yield from self._record("reject", {"key": key}))

    @hookimpl(wrapper=True)
    def repid_queue_declare(self, queue: str) -> Generator[None, Any, Any]:
        return (yield from self._record("queue_declare", {"queue_name": queue}))

    @hookimpl(wrapper=True)
    def repid_queue_flush(self, queue: str) -> Generator[None, Any, Any]:
        return (yield from self._record("queue_flush", {"queue_name": queue}))

    @hookimpl(wrapper=True)
    def repid_queue_delete(self, queue: str) -> Generator[None, Any, Any]:
        return (yield from self._record("queue_delete", {"queue_name": queue}))

    @hookimpl(wrapper=True)
    def repid_get_bucket(self, id_: str) -> Generator[None, Any, Any]:
        return (yield from self._record("get_bucket", {"id_": id_}))

    @hookimpl(wrapper=True)
    def repid_store_bucket(self, id_: str, payload: Any) -> Generator[None, Any, Any]:
        return (yield from self._record("store_bucket", {"id_": id_, "payload": payload}))

    @hookimpl(wrapper=True)
    def repid_delete_bucket(self, id_: str) -> Generator[None, Any, Any]:
        return (yield from self._record("delete_bucket", {"id_": id_}))
