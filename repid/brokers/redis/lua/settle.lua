-- SETTLE (after base.lua and common.lua). ARGV per operation: action (ack, nack, reject,
-- release, requeue), where the message is held (inflight, dead, delayed), id, lease token
-- ('' = any); a nack adds the reason ('' = none), a requeue the new body, priority and
-- ready time ms ('' = now). Returns a string with one '1' (done) or '0' (not held any
-- more, e.g. the lease expired) per operation. Removing the message from where it was
-- held and placing it anew is one atomic step.
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
    local cur = redis.call('HGET', LEASES, id)
    if cur and (token == '' or cur == token) then
      redis.call('HDEL', LEASES, id)
      redis.call('ZREM', INFLIGHT, id)
      held = 1
    end
  elseif where == 'dead' then
    held = redis.call('LREM', DEAD, 1, id)
  elseif where == 'delayed' then
    held = redis.call('ZREM', DELAYED, id)
  end
  if held == 0 and action == 'requeue' and token == '' then
    -- a requeue without a lease of ours: replace the message wherever it is
    for p = 0, 2 do redis.call('LREM', ready(p), 0, id) end
    redis.call('LREM', DEAD, 0, id)
    redis.call('ZREM', DELAYED, id)
    redis.call('ZREM', INFLIGHT, id)
    redis.call('HDEL', LEASES, id)
    held = 1
  end
  if held == 1 then
    if action == 'ack' then
      redis.call('HDEL', MSGS, id)
      forget(id)
    elseif action == 'nack' then
      redis.call('RPUSH', DEAD, id)
      redis.call('HDEL', DELIVERIES, id)
      if ARGV[extra] ~= '' then
        redis.call('HSET', REASONS, id, ARGV[extra])
      else
        redis.call('HDEL', REASONS, id)
      end
    elseif action == 'reject' or action == 'release' then
      local body = redis.call('HGET', MSGS, id)
      if body then
        -- reject goes to the back (another worker may handle it); release, of messages
        -- taken but never handed out, goes back to the front in its order
        push_ready(id, body, action == 'release')
        woke = woke + 1
      end
    elseif action == 'requeue' then
      -- the same id replaces its own body: a requeue is never blocked by deduplication
      redis.call('HSET', MSGS, id, ARGV[extra])
      forget(id)
      local at = tonumber(ARGV[extra + 2])
      if at and at > now then
        redis.call('ZADD', DELAYED, at, id)
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
