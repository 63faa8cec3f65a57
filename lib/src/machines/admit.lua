-- Machine admission: grants up to `wanted` new machine slots without ever exceeding
-- `max_machines` alive, counting machines the provider reports alive plus slots already
-- granted but not yet visible at the provider (reservations expire after a TTL).
-- KEYS[1] reservations sorted set (slot → expiry ms)
-- ARGV[1] now ms, ARGV[2] max_machines, ARGV[3] alive at the provider, ARGV[4] reservation TTL ms,
-- ARGV[5..] candidate slot ids (as many as wanted)
-- Returns the granted slot ids.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local reserved = redis.call('ZCARD', KEYS[1])
local room = tonumber(ARGV[2]) - tonumber(ARGV[3]) - reserved
local granted = {}
for i = 5, #ARGV do
  if room <= 0 then break end
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[4]), ARGV[i])
  table.insert(granted, ARGV[i])
  room = room - 1
end
return granted
