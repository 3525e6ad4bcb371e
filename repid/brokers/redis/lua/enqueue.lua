-- ENQUEUE (after base.lua; only the keys up to DECLARED). ARGV: queue name, '1' to refuse
-- an undeclared queue or '0' to declare it (repid 1.x's behaviour, the default), then per
-- message: id, body (its first character is the priority, 0-2), ready time ms ('' = now).
-- Returns -1 when the queue is not declared and '1' was given, else a string with one '1'
-- (stored) or '0' (id already present: a no-op) per message, preceded by '+' when this run
-- declared the queue (the caller then adds it to the index of queue names, a key outside
-- the queue's slot that no script touches). Declaring the queue, storing the body and
-- placing the id happen together, so a message is never stored in a queue consumers and
-- stats do not know, nor without being queued.
--
-- Wake-ups: a message that makes a ready list non-empty, and every delayed one (so idle
-- consumers recompute how long to block), pushes a wake token. One put behind others
-- needs none: consumers are busy, or were woken by the first, and a TAKE that leaves
-- messages behind passes a token on (see take.lua).
local res = {}
if redis.call('EXISTS', DECLARED) == 0 then
  if ARGV[2] == '1' then
    return -1
  end
  redis.call('SET', DECLARED, '1')
  res[1] = '+'
end
local now = nil
local woke = 0
for i = 3, #ARGV, 3 do
  local id, body = ARGV[i], ARGV[i + 1]
  -- the id is deduplicated while its body exists (ready, delayed, in flight or dead)
  if redis.call('HSETNX', MSGS, id, body) == 1 then
    local at = tonumber(ARGV[i + 2])
    if at and not now then now = now_ms() end
    if at and at > now then
      redis.call('ZADD', DELAYED, at, id)
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
