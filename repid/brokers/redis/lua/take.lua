-- TAKE (after base.lua and common.lua). ARGV: queue name, how many to take, lease ms, the
-- anti-starvation limit K. Returns {next delayed ready time or -1, server now ms, how many
-- ids were dead-lettered as unusable, 1 if the queue is declared (else 0 and nothing
-- more), then one `token LF returns LF id LF body` string per message taken, `returns`
-- being how many of its leases ran out before} (one string each: fewer replies to parse
-- than four). The bodies are sent as stored: the client reads this reply undecoded and
-- decodes each message on its own.
--
-- Priority rule: a level below HIGH that has waiting messages counts the takes served
-- from higher levels since it was last served; once that count reaches K it is served
-- next (MEDIUM before LOW when both are due). So with every level busy, each waiting
-- level gets at least one take in every K + 2.
local now = now_ms()
if redis.call('EXISTS', DECLARED) == 0 then
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
  redis.call('DEL', WAKE)
  return out
end
local c = redis.call('HMGET', STATE, 'skip0', 'skip1', 'seq')
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
  if string.find(id, '\n', 1, true) then
    -- an id no producer of repid writes, and that the reply format cannot carry
    redis.call('RPUSH', DEAD, id)
    redis.call('HSET', REASONS, id, 'the id has a line break, which repid never writes')
    out[3] = out[3] + 1
  else
    local body = redis.call('HGET', MSGS, id)
    seq = seq + 1
    local token = now .. '.' .. seq
    -- the lease: a taken id stays in the in-flight set until settled or expired; its
    -- holder extends it (EXTEND) while it works on the message
    redis.call('ZADD', INFLIGHT, now + lease, id)
    redis.call('HSET', LEASES, id, token)
    local returns = redis.call('HGET', DELIVERIES, id) or '0'
    taken = taken + 1
    out[#out + 1] = token .. '\n' .. returns .. '\n' .. id .. '\n' .. (body or '')
  end
end
redis.call('HSET', STATE, 'skip0', skip[1], 'skip1', skip[2], 'seq', seq)
if lens[1] + lens[2] + lens[3] == 0 then
  redis.call('DEL', WAKE)
elseif redis.call('LLEN', WAKE) == 0 then
  -- messages are left (this consumer is full): pass a wake token on to another consumer
  wake(1)
end
return out
