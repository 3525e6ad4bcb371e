-- STATS (after base.lua and common.lua). No ARGV. Counts of the queue's messages {ready,
-- delayed, in flight, dead}, after doing what MAINTAIN does, so a due delayed message
-- counts as ready and an expired lease as ready again, the moment they are.
maintain(now_ms())
return {redis.call('LLEN', ready(0)) + redis.call('LLEN', ready(1))
        + redis.call('LLEN', ready(2)), redis.call('ZCARD', DELAYED),
        redis.call('ZCARD', INFLIGHT), redis.call('LLEN', DEAD)}
