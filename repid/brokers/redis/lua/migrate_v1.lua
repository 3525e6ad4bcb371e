-- MIGRATE_V1 (after base.lua): move one message written by repid 1.x into the queue's
-- keys, whole or not at all. KEYS: the queue's keys (_keys.py), then the 1.x message hash
-- and the 1.x list or sorted set that holds its name. ARGV: the 1.x name (`topic:id`),
-- the holder's kind ('list' or 'zset'), the payload and parameters the caller read and
-- converted (the move happens only if the hash still holds them), then the id, the new
-- body, the ready time ms ('' = now), where it goes ('ready', 'delayed' or 'dead') and
-- the dead reason.
-- Returns 'moved'; or, changing nothing: 'gone' (no longer in the holder: a 1.x worker
-- took it, or an earlier run moved it), 'changed' (the hash changed since it was read),
-- 'exists' (the id is already stored here).
local V1_HASH, V1_HOLDER = KEYS[#KEYS - 1], KEYS[#KEYS]
local name, kind, payload, params = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local id, body, at, dest, reason = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]

local held
if kind == 'list' then
  held = redis.call('LPOS', V1_HOLDER, name)
else
  held = redis.call('ZSCORE', V1_HOLDER, name)
end
if not held then
  return 'gone'
end
local current = redis.call('HMGET', V1_HASH, 'payload', 'parameters')
if current[1] ~= payload or current[2] ~= params then
  return 'changed'
end
if redis.call('HSETNX', MSGS, id, body) == 0 then
  return 'exists'
end
if dest == 'dead' then
  redis.call('RPUSH', DEAD, id)
  redis.call('HSET', REASONS, id, reason)
else
  local ready_at = tonumber(at)
  if ready_at and ready_at > now_ms() then
    redis.call('ZADD', DELAYED, ready_at, id)
    wake(1)
  elseif redis.call('RPUSH', ready(tonumber(string.sub(body, 1, 1))), id) == 1 then
    wake(1)
  end
end
if kind == 'list' then
  redis.call('LREM', V1_HOLDER, -1, name)
else
  redis.call('ZREM', V1_HOLDER, name)
end
redis.call('DEL', V1_HASH)
return 'moved'
