-- STATS (after base.lua and common.lua). ARGV: queue name. Counts of the queue's messages
-- {ready, delayed, in flight, dead}, after doing what MAINTAIN does, so a due delayed
-- message counts as ready and an expired lease as ready again, the moment they are; an
-- empty array when the queue is not declared (a mistyped name is not an empty queue).
if redis.call('EXISTS', DECLARED) == 0 then
  return {}
end
maintain(now_ms())
return {redis.call('LLEN', ready(0)) + redis.call('LLEN', ready(1))
        + redis.call('LLEN', ready(2)), redis.call('ZCARD', DELAYED),
        redis.call('ZCARD', INFLIGHT), redis.call('LLEN', DEAD)}
