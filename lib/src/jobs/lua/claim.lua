-- A worker claims a job for one attempt: the epoch (fencing token) goes up by one and a lease
-- names the holder. Only a queued job, or a running one whose lease has lapsed (its worker
-- died), can be claimed; the latter counts the dead attempt in `lost_attempts`, which is what
-- decides poison (not JetStream's delivery count, which outages and busy naks also spend).
-- KEYS[1] job hash, KEYS[2] lease key
-- A lapsed lease is not taken over while the caller says it may not be ('0' in ARGV[5]: it
-- reconnected to Redis a moment ago, when every lease has lapsed, live attempts' too).
-- ARGV[1] worker id, ARGV[2] lease TTL ms, ARGV[3] now ms, ARGV[4] key prefix, ARGV[5] '1' if a
-- running job may be taken over
-- Returns {'claimed', epoch} | {'busy', lease ms left} | {'done', status} | {'not_ready', status}
-- | {'missing', ''}
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
if is_terminal(status) then return {'done', status} end
if status ~= 'queued' and status ~= 'running' then return {'not_ready', status} end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'busy', tostring(redis.call('PTTL', KEYS[2]))}
end
if status == 'running' and ARGV[5] == '0' then return {'busy', ARGV[2]} end
if status == 'running' then redis.call('HINCRBY', KEYS[1], 'lost_attempts', 1) end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local id = redis.call('HGET', KEYS[1], 'id')
local tenant = redis.call('HGET', KEYS[1], 'tenant')
move_status(ARGV[4], tenant, id, status, 'running', ARGV[3])
redis.call('HSET', KEYS[1], 'status', 'running', 'updated_at', ARGV[3], 'worker', ARGV[1])
redis.call('SET', KEYS[2], ARGV[1] .. ':' .. epoch, 'PX', ARGV[2])
record(KEYS[1], status, 'running', 'claimed by ' .. ARGV[1], ARGV[3], epoch)
return {'claimed', tostring(epoch)}
