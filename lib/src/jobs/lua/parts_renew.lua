-- Extends a part attempt's lease while it is still the part's current attempt and the job
-- still runs.
-- KEYS[1] job hash, KEYS[2] part hash, KEYS[3] part lease
-- ARGV[1] worker id, ARGV[2] epoch, ARGV[3] lease TTL ms
-- Returns 'ok' | 'canceled' | 'lost'
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'canceled' then return 'canceled' end
if status ~= 'running' then return 'lost' end
if redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[2] or redis.call('HGET', KEYS[2], 'status') ~= 'running' then
  return 'lost'
end
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[1] .. ':' .. ARGV[2] then return 'lost' end
redis.call('SET', KEYS[3], ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
return 'ok'
