-- What every script uses: the server clock, the ready list of a priority, wake-ups.
-- The loader (_scripts.py) puts the key names (MSGS, READY0, ... from _keys.py) and
-- WAKE_TOKENS_MAX in front of this file.

local READY = {[0] = READY0, [1] = READY1, [2] = READY2}

-- the ready list of priority p (0 LOW, 1 MEDIUM, 2 HIGH)
local function ready(p) return READY[p] end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- wake up to n blocked consumers (bounded, so an unconsumed queue does not grow the list)
local function wake(n)
  if n > 0 then
    local tokens = {}
    for i = 1, math.min(n, WAKE_TOKENS_MAX) do tokens[i] = '1' end
    if redis.call('LPUSH', WAKE, unpack(tokens)) > WAKE_TOKENS_MAX then
      redis.call('LTRIM', WAKE, 0, WAKE_TOKENS_MAX - 1)
    end
  end
end
