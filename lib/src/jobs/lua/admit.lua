-- Admission of an uploaded job to the work queue, under the tenant's cap of jobs queued or
-- running at once (0 = no cap). Counting and moving happen in one step, so concurrent
-- dispatchers cannot both admit past the cap.
-- KEYS[1] job hash
-- ARGV[1] cap, ARGV[2] now ms, ARGV[3] key prefix
-- Returns {'ok', queued_count} | {'capped', in_flight} | {'skip', status}
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'uploaded' then return {'skip', status or 'missing'} end
local id = redis.call('HGET', KEYS[1], 'id')
local tenant = redis.call('HGET', KEYS[1], 'tenant')
local prefix = ARGV[3]
local cap = tonumber(ARGV[1])
if cap > 0 then
  local in_flight = redis.call('ZCARD', prefix .. 'jobs:' .. tenant .. ':queued')
    + redis.call('ZCARD', prefix .. 'jobs:' .. tenant .. ':running')
  if in_flight >= cap then return {'capped', tostring(in_flight)} end
end
move_status(prefix, tenant, id, 'uploaded', 'queued', ARGV[2])
redis.call('HSET', KEYS[1], 'status', 'queued', 'updated_at', ARGV[2])
local n = redis.call('HINCRBY', KEYS[1], 'queued_count', 1)
record(KEYS[1], 'uploaded', 'queued', 'admitted', ARGV[2], redis.call('HGET', KEYS[1], 'epoch'))
return {'ok', tostring(n)}
