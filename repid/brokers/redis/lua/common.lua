-- What the scripts that move taken, delayed or returned messages share (after base.lua).

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
-- (`front`: ahead of the others; `expired`: a lease ran out, counted in DELIVERIES);
-- returns how many were put back
local function to_ready(from, ids, front, expired)
  local moved = 0
  for _, id in ipairs(ids) do
    redis.call('ZREM', from, id)
    local body = redis.call('HGET', MSGS, id)
    if body then
      push_ready(id, body, front)
      if expired then redis.call('HINCRBY', DELIVERIES, id, 1) end
      moved = moved + 1
    end
  end
  return moved
end

-- a message leaves the queue's bookkeeping (acked, or its body replaced)
local function forget(id)
  redis.call('HDEL', REASONS, id)
  redis.call('HDEL', DELIVERIES, id)
end

-- promote due delayed messages and return expired leases to their ready list; an expired
-- lease is a redelivery, so the stored body (and its retry count) is not touched
local function maintain(now)
  local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now, 'LIMIT', 0, 1000)
  local moved = to_ready(DELAYED, due, false, false)
  local expired = redis.call('ZRANGEBYSCORE', INFLIGHT, '-inf', now, 'LIMIT', 0, 1000)
  if #expired > 0 then
    redis.call('HDEL', LEASES, unpack(expired))
  end
  moved = moved + to_ready(INFLIGHT, expired, true, true)
  wake(moved)
  return moved
end

-- the earliest ready time among delayed messages, or -1
local function next_due()
  local first = redis.call('ZRANGE', DELAYED, 0, 0, 'WITHSCORES')
  if first[2] then return tonumber(first[2]) end
  return -1
end
