-- EXTEND (after base.lua). ARGV: lease ms, then per message: id, lease token. Moves the
-- deadline of each lease still held under that token to now + lease ms (a settled or
-- expired one is left alone); returns how many it extended. Each consumer runs it every
-- third of a lease for all the messages it holds.
local deadline = now_ms() + tonumber(ARGV[1])
local extended = 0
for i = 2, #ARGV, 2 do
  if redis.call('HGET', LEASES, ARGV[i]) == ARGV[i + 1] then
    redis.call('ZADD', INFLIGHT, 'XX', deadline, ARGV[i])
    extended = extended + 1
  end
end
return extended
