-- MAINTAIN (after base.lua and common.lua). No ARGV. Promotes due delayed messages and
-- returns expired leases; returns how many messages it moved. Run by every live broker
-- instance about once a second.
return maintain(now_ms())
