-- Machine admission: grants up to `wanted` new machine slots without ever exceeding
-- `max_machines` alive. Counted: the machines the caller's view of the provider lists alive,
-- plus every reservation not known to be one of them. A reservation lives for its TTL even
-- after its machine exists (bound to the machine's id): another dispatcher's view may predate
-- that machine, and counting the reservation keeps such a stale view from over-admitting.
-- KEYS[1] reservations sorted set (slot → expiry ms), KEYS[2] slot → machine id (hash)
-- ARGV[1] now ms, ARGV[2] max_machines, ARGV[3] reservation TTL ms, ARGV[4] n = number of
-- alive machine ids, ARGV[5 .. 4+n] those ids, ARGV[5+n ..] candidate slot ids (as many as wanted)
-- Returns the granted slot ids.
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, slot in ipairs(expired) do
  redis.call('HDEL', KEYS[2], slot)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local n = tonumber(ARGV[4])
local alive = {}
for i = 5, 4 + n do
  alive[ARGV[i]] = true
end
local count = n
for _, slot in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local machine = redis.call('HGET', KEYS[2], slot)
  if not (machine and alive[machine]) then
    count = count + 1
  end
end
local room = tonumber(ARGV[2]) - count
local granted = {}
for i = 5 + n, #ARGV do
  if room <= 0 then break end
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[3]), ARGV[i])
  table.insert(granted, ARGV[i])
  room = room - 1
end
return granted
