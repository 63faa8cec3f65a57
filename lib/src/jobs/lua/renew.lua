-- Renews the lease of the current attempt. Anything else (a newer epoch, another holder, the
-- job no longer running) means this worker lost the job and must stop.
-- KEYS[1] job hash, KEYS[2] lease key
-- ARGV[1] worker id, ARGV[2] epoch, ARGV[3] lease TTL ms
-- Returns 'ok' | 'canceled' | 'lost'
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'canceled' then return 'canceled' end
if status ~= 'running' or redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then return 'lost' end
local mine = ARGV[1] .. ':' .. ARGV[2]
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= mine then return 'lost' end
redis.call('SET', KEYS[2], mine, 'PX', ARGV[3])
return 'ok'
