"""The Lua scripts that change a message's state, each one atomic on the Redis server.

Every state change of a message (enqueue, take, ack, nack, reject, requeue, release, the
return of an expired lease, the promotion of a due delayed message) is one script run, so
Redis applies it whole or not at all: there is no moment at which a crash leaves a message
in no structure. Times are the Redis server's clock (`TIME`), in milliseconds, except a
message's ready time, which the producer computes.

The scripts receive a queue's keys in the order of `QUEUE_KEY_NAMES` (ENQUEUE only the
first `ENQUEUE_KEYS`, so a producer sends fewer arguments):

1. `msgs`     hash, message id -> stored body (`<priority>|<timeout ms>|<json>`)
2-4. `ready:0`, `ready:1`, `ready:2`  lists of ids ready to take, one per priority
5. `delayed`  sorted set of ids scored by ready time
6. `wake`     list a blocked consumer BLPOPs on; pushed to whenever something may be ready
7. `queues`   the global set of declared queue names
8. `inflight` sorted set of taken ids scored by lease deadline
9. `leases`   hash, id -> token of its current lease
10. `dead`    list of dead-lettered ids
11. `state`   hash of counters: `skip0`, `skip1` (anti-starvation), `seq` (lease tokens)
12. `reasons` hash, dead id -> why it was dead-lettered (kept beside the body, which may be
    undecodable; removed when the message is acked, requeued, flushed or deleted)
13. `deliveries` hash, id -> how many of its leases ran out (removed when it is acked,
    nacked or requeued; reject and release leave it)

A lease is short (the broker's `lease_time`) and the consumer holding the message extends
it (EXTEND) while the job runs, so a dead worker's messages come back within a lease.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.client import NEVER_DECODE
from redis.exceptions import NoScriptError

from repid.brokers.redis._client import HeldConnection

#: names of the keys of a queue, in the KEYS order of the scripts; `queues` is global
QUEUE_KEY_NAMES = (
    "msgs", "ready:0", "ready:1", "ready:2", "delayed", "wake", "queues", "inflight",
    "leases", "dead", "state", "reasons", "deliveries",
)
#: how many of those keys ENQUEUE takes
ENQUEUE_KEYS = 7

#: at most this many wake-up tokens wait in a queue's wake list
WAKE_TOKENS_MAX = 64

_BASE = """
local msgs, delayed, wake_list, queues = KEYS[1], KEYS[5], KEYS[6], KEYS[7]
local inflight, leases, dead, state = KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local reasons, deliveries = KEYS[12], KEYS[13]
local function ready(p) return KEYS[2 + p] end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- wake up to n blocked consumers (bounded, so an unconsumed queue does not grow the list)
local function wake(n)
  if n > 0 then
    local tokens = {}
    for i = 1, math.min(n, """ + str(WAKE_TOKENS_MAX) + """) do tokens[i] = '1' end
    if redis.call('LPUSH', wake_list, unpack(tokens)) > """ + str(WAKE_TOKENS_MAX) + """ then
      redis.call('LTRIM', wake_list, 0, """ + str(WAKE_TOKENS_MAX - 1) + """)
    end
  end
end
"""

_COMMON = _BASE + """
-- priority and execution timeout (ms) written in front of a stored body; nil if garbage
local function meta(body)
  if not body then return nil, nil end
  local p, t = string.match(body, '^([012])|(%d+)|')
  return tonumber(p), tonumber(t)
end

-- put an id on the ready list of its priority (MEDIUM when the body is unreadable, so the
-- consumer sees it and dead-letters it)
local function push_ready(id, body, front)
  local p = meta(body) or 1
  if front then
    redis.call('LPUSH', ready(p), id)
  else
    redis.call('RPUSH', ready(p), id)
  end
end

-- take ids out of the sorted set `from` and put each one still stored on its ready list
-- (`front`: ahead of the others; `expired`: a lease ran out, counted in `deliveries`);
-- returns how many were put back
local function to_ready(from, ids, front, expired)
  local moved = 0
  for _, id in ipairs(ids) do
    redis.call('ZREM', from, id)
    local body = redis.call('HGET', msgs, id)
    if body then
      push_ready(id, body, front)
      if expired then redis.call('HINCRBY', deliveries, id, 1) end
      moved = moved + 1
    end
  end
  return moved
end

-- a message leaves the queue's bookkeeping (acked, or its body replaced)
local function forget(id)
  redis.call('HDEL', reasons, id)
  redis.call('HDEL', deliveries, id)
end

-- promote due delayed messages and return expired leases to their ready list; an expired
-- lease is a redelivery, so the stored body (and its retry count) is not touched
local function maintain(now)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)
  local moved = to_ready(delayed, due, false, false)
  local expired = redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, 1000)
  if #expired > 0 then
    redis.call('HDEL', leases, unpack(expired))
  end
  moved = moved + to_ready(inflight, expired, true, true)
  wake(moved)
  return moved
end

-- the earliest ready time among delayed messages, or -1
local function next_due()
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if first[2] then return tonumber(first[2]) end
  return -1
end
"""

#: ARGV: queue name, then per message: id, body (its first character is the priority,
#: 0-2), ready time ms ('' = now). Returns -1 when the queue is not declared, else a string
#: with one '1' (stored) or '0' (id already present: a no-op) per message. Storing the body
#: and placing the id happen together, so a message is never stored without being queued
#: or the other way round.
#:
#: Wake-ups: a message that makes a ready list non-empty, and every delayed one (so idle
#: consumers recompute how long to block), pushes a wake token. One put behind others
#: needs none: consumers are busy, or were woken by the first, and a TAKE that leaves
#: messages behind passes a token on (see TAKE).
ENQUEUE = _BASE + """
if redis.call('SISMEMBER', queues, ARGV[1]) == 0 then
  return -1
end
local now = nil
local res = {}
local woke = 0
for i = 2, #ARGV, 3 do
  local id, body = ARGV[i], ARGV[i + 1]
  -- the id is deduplicated while its body exists (ready, delayed, in flight or dead)
  if redis.call('HSETNX', msgs, id, body) == 1 then
    local at = tonumber(ARGV[i + 2])
    if at and not now then now = now_ms() end
    if at and at > now then
      redis.call('ZADD', delayed, at, id)
      woke = woke + 1
    elseif redis.call('RPUSH', ready(tonumber(string.sub(body, 1, 1))), id) == 1 then
      woke = woke + 1
    end
    res[#res + 1] = '1'
  else
    res[#res + 1] = '0'
  end
end
wake(woke)
return table.concat(res)
"""

#: ARGV: queue name, how many to take, lease ms, the anti-starvation limit K. Returns {next
#: delayed ready time or -1, server now ms, how many ids were dead-lettered as unusable, 1
#: if the queue is declared (else 0 and nothing more), then one `token LF returns LF id LF
#: body` string per message taken, `returns` being how many of its leases ran out before}
#: (one string each: fewer replies to parse than four). The bodies are sent as stored: the
#: client reads this reply undecoded and decodes each message on its own.
#:
#: Priority rule: a level below HIGH that has waiting messages counts the takes served
#: from higher levels since it was last served; once that count reaches K it is served
#: next (MEDIUM before LOW when both are due). So with every level busy, each waiting
#: level gets at least one take in every K + 2.
TAKE = _COMMON + """
local now = now_ms()
if redis.call('SISMEMBER', queues, ARGV[1]) == 0 then
  return {-1, now, 0, 0}
end
maintain(now)
local n = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local out = {next_due(), now, 0, 1}
if n <= 0 then return out end
local lens = {redis.call('LLEN', ready(0)), redis.call('LLEN', ready(1)),
              redis.call('LLEN', ready(2))}
if lens[1] + lens[2] + lens[3] == 0 then
  redis.call('DEL', wake_list)
  return out
end
local c = redis.call('HMGET', state, 'skip0', 'skip1', 'seq')
local skip = {tonumber(c[1]) or 0, tonumber(c[2]) or 0}
local seq = tonumber(c[3]) or 0
local taken = 0
while taken < n do
  local level = -1
  for l = 1, 0, -1 do
    if lens[l + 1] == 0 then
      skip[l + 1] = 0
    elseif skip[l + 1] >= limit and level < 0 then
      level = l
    end
  end
  if level < 0 then
    for l = 2, 0, -1 do
      if lens[l + 1] > 0 then
        level = l
        break
      end
    end
  end
  if level < 0 then break end
  local id = redis.call('LPOP', ready(level))
  lens[level + 1] = lens[level + 1] - 1
  for l = 0, level - 1 do
    if lens[l + 1] > 0 then skip[l + 1] = skip[l + 1] + 1 end
  end
  if level < 2 then skip[level + 1] = 0 end
  if string.find(id, '\\n', 1, true) then
    -- an id no producer of repid writes, and that the reply format cannot carry
    redis.call('RPUSH', dead, id)
    redis.call('HSET', reasons, id, 'the id has a line break, which repid never writes')
    out[3] = out[3] + 1
  else
    local body = redis.call('HGET', msgs, id)
    seq = seq + 1
    local token = now .. '.' .. seq
    -- the lease: a taken id stays in the in-flight set until settled or expired; its
    -- holder extends it (EXTEND) while it works on the message
    redis.call('ZADD', inflight, now + lease, id)
    redis.call('HSET', leases, id, token)
    local returns = redis.call('HGET', deliveries, id) or '0'
    taken = taken + 1
    out[#out + 1] = token .. '\\n' .. returns .. '\\n' .. id .. '\\n' .. (body or '')
  end
end
redis.call('HSET', state, 'skip0', skip[1], 'skip1', skip[2], 'seq', seq)
if lens[1] + lens[2] + lens[3] == 0 then
  redis.call('DEL', wake_list)
elseif redis.call('LLEN', wake_list) == 0 then
  -- messages are left (this consumer is full): pass a wake token on to another consumer
  wake(1)
end
return out
"""

#: ARGV per operation: action (ack, nack, reject, release, requeue), where the message is
#: held (inflight, dead, delayed), id, lease token ('' = any); a nack adds the reason ('' =
#: none), a requeue the new body, priority and ready time ms ('' = now). Returns a string
#: with one '1' (done) or '0' (not held any more, e.g. the lease expired) per operation.
#: Removing the message from where it was held and placing it anew is one atomic step.
SETTLE = _COMMON + """
local now = now_ms()
local res = {}
local woke = 0
local i = 1
while i <= #ARGV do
  local action, where, id, token = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local extra = i + 4
  i = i + (action == 'requeue' and 7 or action == 'nack' and 5 or 4)
  local held = 0
  if (where == 'dead' or where == 'delayed') and (action == 'reject' or action == 'release'
      or (action == 'nack' and where == 'dead')) then
    -- a message read from the dead or delayed part stays where it is
    held = -1
  elseif where == 'inflight' then
    -- only the holder of the current lease settles: after a lease expired and the message
    -- went back, the old holder's late settle changes nothing
    local cur = redis.call('HGET', leases, id)
    if cur and (token == '' or cur == token) then
      redis.call('HDEL', leases, id)
      redis.call('ZREM', inflight, id)
      held = 1
    end
  elseif where == 'dead' then
    held = redis.call('LREM', dead, 1, id)
  elseif where == 'delayed' then
    held = redis.call('ZREM', delayed, id)
  end
  if held == 0 and action == 'requeue' and token == '' then
    -- a requeue without a lease of ours: replace the message wherever it is
    for p = 0, 2 do redis.call('LREM', ready(p), 0, id) end
    redis.call('LREM', dead, 0, id)
    redis.call('ZREM', delayed, id)
    redis.call('ZREM', inflight, id)
    redis.call('HDEL', leases, id)
    held = 1
  end
  if held == 1 then
    if action == 'ack' then
      redis.call('HDEL', msgs, id)
      forget(id)
    elseif action == 'nack' then
      redis.call('RPUSH', dead, id)
      redis.call('HDEL', deliveries, id)
      if ARGV[extra] ~= '' then
        redis.call('HSET', reasons, id, ARGV[extra])
      else
        redis.call('HDEL', reasons, id)
      end
    elseif action == 'reject' or action == 'release' then
      local body = redis.call('HGET', msgs, id)
      if body then
        -- reject goes to the back (another worker may handle it); release, of messages
        -- taken but never handed out, goes back to the front in its order
        push_ready(id, body, action == 'release')
        woke = woke + 1
      end
    elseif action == 'requeue' then
      -- the same id replaces its own body: a requeue is never blocked by deduplication
      redis.call('HSET', msgs, id, ARGV[extra])
      forget(id)
      local at = tonumber(ARGV[extra + 2])
      if at and at > now then
        redis.call('ZADD', delayed, at, id)
      else
        redis.call('RPUSH', ready(tonumber(ARGV[extra + 1])), id)
      end
      woke = woke + 1
    end
  end
  res[#res + 1] = held == 0 and '0' or '1'
end
wake(woke)
return table.concat(res)
"""

#: ARGV: lease ms, then per message: id, lease token. Moves the deadline of each lease still
#: held under that token to now + lease ms (a settled or expired one is left alone);
#: returns how many it extended. Each consumer runs it every third of a lease for all the
#: messages it holds.
EXTEND = _BASE + """
local deadline = now_ms() + tonumber(ARGV[1])
local extended = 0
for i = 2, #ARGV, 2 do
  if redis.call('HGET', leases, ARGV[i]) == ARGV[i + 1] then
    redis.call('ZADD', inflight, 'XX', deadline, ARGV[i])
    extended = extended + 1
  end
end
return extended
"""

#: No ARGV. Promotes due delayed messages and returns expired leases; returns how many
#: messages it moved. Run by every live broker instance about once a second.
MAINTAIN = _COMMON + """
return maintain(now_ms())
"""


#: No ARGV. Counts of the queue's messages {ready, delayed, in flight, dead}, after doing
#: what MAINTAIN does, so a due delayed message counts as ready and an expired lease as
#: ready again, the moment they are.
STATS = _COMMON + """
maintain(now_ms())
return {redis.call('LLEN', ready(0)) + redis.call('LLEN', ready(1))
        + redis.call('LLEN', ready(2)), redis.call('ZCARD', delayed),
        redis.call('ZCARD', inflight), redis.call('LLEN', dead)}
"""


#: the option of redis-py's `execute_command` that reads one reply without decoding it
UNDECODED: dict[str, Any] = {NEVER_DECODE: True}


class Script:
    """A Lua script run by its SHA1, loaded into Redis again whenever Redis lost it."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, client: Redis | HeldConnection, keys: Sequence[str | bytes],
                       args: Sequence[str | bytes | int | float], *, raw: bool = False) -> Any:
        """Run the script; after a Redis restart (NOSCRIPT) load it and run it again.

        `raw`: the reply's strings stay bytes (only with a `Redis` client), for replies that
        may carry text that is not UTF-8."""
        options = UNDECODED if raw else {}
        try:
            return await client.execute_command(  # type: ignore[no-untyped-call]
                "EVALSHA", self.sha, len(keys), *keys, *args, **options)
        except NoScriptError:
            await client.execute_command("SCRIPT", "LOAD", self.source)  # type: ignore[no-untyped-call]
            return await client.execute_command(  # type: ignore[no-untyped-call]
                "EVALSHA", self.sha, len(keys), *keys, *args, **options)
