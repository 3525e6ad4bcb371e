-- MIGRATE_V1_BUCKET: move one bucket written by repid 1.x to its new key, whole or not at
-- all, keeping the time it has left. KEYS: the 1.x key (the bare id), the new key.
-- ARGV: the value the caller read and converted, the new value.
-- Returns 'moved'; or, changing nothing: 'gone' (the 1.x key no longer exists),
-- 'changed' (its value changed since it was read), 'exists' (the new key is taken).
local old, new = KEYS[1], KEYS[2]
local current = redis.call('GET', old)
if not current then
  return 'gone'
end
if current ~= ARGV[1] then
  return 'changed'
end
if redis.call('EXISTS', new) == 1 then
  return 'exists'
end
local left = redis.call('PTTL', old)
if left > 0 then
  redis.call('SET', new, ARGV[2], 'PX', left)
else
  redis.call('SET', new, ARGV[2])
end
redis.call('DEL', old)
return 'moved'
