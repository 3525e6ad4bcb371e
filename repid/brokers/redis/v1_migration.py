"""Move what repid 1.x left in Redis into the current layout (`repid migrate-v1`).

repid 1.x kept, per queue and 1.x priority P (0, 5 or 9):

- `q:<queue>:<P>:n`     list of ready message names (`<topic>:<id>`), newest first
- `q:<queue>:<P>:d`     sorted set of delayed names, scored by ready time (epoch seconds)
- `q:<queue>:<P>:dead`  list of dead-lettered names, newest first
- `m:<queue>:<P>:<topic>:<id>`  hash with the message's `payload` and `parameters`
- `processing`          one sorted set of the names 1.x workers are running
- buckets under their bare id, as JSON strings (`v1_format.v1_bucket_kind`).

Guarantees:

- Each message is moved by one Lua script (`lua/migrate_v1.lua`): its new body and place
  in the queue are written, and its 1.x name and hash deleted, together or not at all. The
  script moves it only if it is still where it was read and unchanged, and never over an
  id already stored in the queue. So a run stopped at any point (Ctrl-C, a lost
  connection, a killed process) loses and duplicates nothing, and running again moves
  what is left; a run with nothing left to move changes nothing.
- Oldest first: the ready and dead lists are read from their oldest end, so the new lists
  keep 1.x's order; a delayed message keeps its ready time (its 1.x score).
- A bucket is moved by one Lua script (`lua/migrate_v1_bucket.lua`) to
  `<prefix>:bucket:<id>` with the time it had left; one whose new key exists is left.
- Messages 1.x workers are running (`processing`) are not touched: they are counted, and
  a later run moves whatever those workers put back.
- A dry run (`apply=False`) only reads.

Redis Cluster is not supported: the scripts touch the 1.x and the new keys together, as
1.x's own transactions did.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from importlib import resources
from typing import Any

from redis.asyncio import Redis

from repid.brokers._dsn import mask_dsn
from repid.brokers._v1_format import (
    V1_DEAD_REASON,
    V1Message,
    convert_bucket,
    convert_message,
    parse_params,
    v1_bucket_kind,
)
from repid.brokers._v1_report import BucketReport, Budget, QueueReport
from repid.brokers.redis._client import ClientSettings
from repid.brokers.redis._codec import encode_body, ready_ms
from repid.brokers.redis._keys import QueueKey, index_key, queue_keys
from repid.brokers.redis._scripts import Script, assemble
from repid.errors import BrokerConnectionError, PayloadDecodeError

MIGRATE = Script("migrate_v1", assemble("migrate_v1", ["base"]))
MIGRATE_BUCKET = Script("migrate_v1_bucket", (
    resources.files("repid.brokers.redis") / "lua" / "migrate_v1_bucket.lua").read_text(
        encoding="utf-8"))

#: the names 1.x workers are running (one sorted set for all queues)
V1_PROCESSING = "processing"
#: a 1.x queue key: `q:<queue>:<priority>:<n | d | dead>`
_V1_QUEUE_KEY = re.compile(r"q:([A-Za-z0-9_-]+):(\d+):(n|d|dead)")
#: a 1.x bucket key: a bare id
_V1_BUCKET_KEY = re.compile(r"[A-Za-z0-9_-]+")
#: the category of each 1.x holder kind
_CATEGORY = {"n": "ready", "d": "delayed", "dead": "dead"}
#: names read from a holder at once
_BATCH = 200

_UTC = timezone.utc


async def open_client(dsn: str) -> Redis:
    """A client for `dsn` (BrokerConnectionError, password masked, when Redis is down, and
    for a Redis Cluster: repid 1.x ran on one server, and its keys have no hash tags)."""
    client = await ClientSettings(dsn, client_name="repid-migrate-v1").open()
    if not isinstance(client, Redis):
        await client.aclose()
        raise BrokerConnectionError(
            f"{mask_dsn(dsn)} is a Redis Cluster; migrate the data of repid 1.x on the one "
            "Redis server it ran on, before moving to a cluster")
    return client


async def v1_queues(client: Redis) -> list[str]:
    """The names of the queues repid 1.x left keys for, sorted."""
    found = set()
    async for key in client.scan_iter(match="q:*", count=1000):
        match = _V1_QUEUE_KEY.fullmatch(str(key))
        if match:
            found.add(match.group(1))
    return sorted(found)


async def in_flight(client: Redis) -> int:
    """Messages repid 1.x workers are running now (all queues)."""
    return int(await client.zcard(V1_PROCESSING))


async def _holders(client: Redis, queue: str) -> list[tuple[str, int, str]]:
    """(key, 1.x priority, kind) of each 1.x key of `queue` that exists: ready lists,
    then delayed sets, then dead lists, the highest priority first."""
    found = []
    async for key in client.scan_iter(match=f"q:{queue}:*", count=1000):
        match = _V1_QUEUE_KEY.fullmatch(str(key))
        if match and match.group(1) == queue:
            found.append((str(key), int(match.group(2)), match.group(3)))
    order = {"n": 0, "d": 1, "dead": 2}
    return sorted(found, key=lambda h: (order[h[2]], -h[1]))


async def _names(client: Redis, key: str, kind: str,
                 skipped: list[int]) -> AsyncIterator[tuple[str, float | None]]:
    """The names in a 1.x holder, oldest first, with their score (delayed) or None; read
    in batches from the oldest end, past the `skipped[0]` oldest ones that stay."""
    while True:
        if kind == "d":
            scored: list[Any] = await client.zrange(
                key, skipped[0], skipped[0] + _BATCH - 1, withscores=True)
            batch: list[tuple[str, float | None]] = [
                (str(pair[0]), float(pair[1])) for pair in scored]
        else:
            end = -1 - skipped[0]
            names = await client.lrange(key, end - _BATCH + 1, end)
            batch = [(str(name), None) for name in reversed(names)]
        if not batch:
            return
        for item in batch:
            yield item
        # moved names left the holder and `skipped` counts those that stay, so the next
        # read starts right after what was seen


async def migrate_queue(client: Redis, queue: str, *, prefix: str = "repid",
                        apply: bool = False, budget: Budget | None = None) -> QueueReport:
    """Count (`apply=False`) or move (`apply=True`) the 1.x messages of `queue`."""
    report = QueueReport(queue)
    budget = budget or Budget()
    holders = await _holders(client, queue)
    if not apply:
        for key, _, kind in holders:
            size = await (client.zcard(key) if kind == "d" else client.llen(key))
            report.counts[_CATEGORY[kind]] += int(size)
        return report
    keys = queue_keys(prefix, queue)
    if holders:
        # the queue exists now: producers and workers of the current version may use it
        await client.set(keys[QueueKey.DECLARED], "1")
        await client.sadd(index_key(prefix), queue)
    for key, priority, kind in holders:
        skipped = [0]
        async for name, score in _names(client, key, kind, skipped):
            if budget.spent:
                report.notes.append("stopped at the --limit; run again to move the rest")
                return report
            outcome = await _move(client, keys, queue, priority, key, kind, name, score)
            if outcome == "moved":
                budget.spend()
                report.counts[_CATEGORY[kind]] += 1
            elif outcome != "gone":
                skipped[0] += 1
                report.skipped.append(f"{name}: {outcome}")
    return report


async def _move(client: Redis, keys: list[str], queue: str, priority: int, holder: str,
                kind: str, name: str, score: float | None) -> str:
    """Move one message; the script's outcome, or why it was left ('no data', 'cannot be
    read: ...'). A hash changed while it was read is read again (a few times)."""
    topic, _, id_ = name.partition(":")
    hash_key = f"m:{queue}:{priority}:{name}"
    for _ in range(3):
        values = await client.hmget(hash_key, ["payload", "parameters"])
        payload, raw_params = values[0], values[1]
        if payload is None or raw_params is None:
            return "no data (1.x lost its payload or parameters)"
        ready_at = None if score is None else datetime.fromtimestamp(score, _UTC)
        try:
            message = V1Message(id_=id_, topic=topic, queue=queue, priority=priority,
                                payload=str(payload), params=parse_params(str(raw_params)))
            key, new_payload, params = convert_message(message, ready_at)
        except PayloadDecodeError as exc:
            return f"cannot be read: {exc}"
        dead = kind == "dead"
        outcome = str(await MIGRATE(client, [*keys, hash_key, holder], [
            name, "zset" if kind == "d" else "list", str(payload), str(raw_params),
            key.id_, encode_body(key, new_payload, params),
            "" if dead else ready_ms(params), "dead" if dead else "queue", V1_DEAD_REASON]))
        if outcome != "changed":
            return "already stored in the queue (same id)" if outcome == "exists" \
                else outcome
    return "changed while being moved (a repid 1.x worker is using it)"


async def migrate_buckets(client: Redis, where: str, *, prefix: str = "repid",
                          apply: bool = False, budget: Budget | None = None) -> BucketReport:
    """Count or move the buckets repid 1.x wrote in the database `client` talks to
    (`where` names it in the report)."""
    report = BucketReport(where)
    budget = budget or Budget()
    async for key in client.scan_iter(count=1000, _type="STRING"):
        name = str(key)
        if not _V1_BUCKET_KEY.fullmatch(name):
            continue
        raw = await client.get(name)
        kind = None if raw is None else v1_bucket_kind(str(raw))
        if kind is None:
            continue
        if not apply:
            report.counts[kind] += 1
            continue
        if budget.spent:
            return report
        outcome = await _move_bucket(client, name, str(raw), prefix)
        if outcome == "moved":
            budget.spend()
            report.counts[kind] += 1
        elif outcome != "gone":
            report.skipped.append(f"{name}: {outcome}")
    return report


async def _move_bucket(client: Redis, name: str, raw: str, prefix: str) -> str:
    try:
        new = convert_bucket(raw).encode()
    except PayloadDecodeError as exc:
        return f"cannot be read: {exc}"
    outcome = str(await MIGRATE_BUCKET(client, [name, f"{prefix}:bucket:{name}"], [raw, new]))
    return {"exists": "its new key is already taken",
            "changed": "changed while being moved"}.get(outcome, outcome)
