-- A worker claims one part of a split job for one attempt: the part's own epoch goes up by
-- one and its lease names the holder. Parts are fenced on their own epochs, independent of
-- the job's (a new coordinator does not invalidate parts in flight); the job must still be
-- running (a canceled or finished job hands out nothing).
-- KEYS[1] job hash, KEYS[2] part hash, KEYS[3] part lease
-- ARGV[1] worker id, ARGV[2] lease TTL ms, ARGV[3] now ms
-- Returns {'claimed', epoch} | {'busy', lease ms left} | {'done', ''} | {'job', status}
-- | {'missing', ''}
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' then return {'job', status or ''} end
local part = redis.call('HGET', KEYS[2], 'status')
if not part then return {'missing', ''} end
if part == 'done' then return {'done', ''} end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {'busy', tostring(redis.call('PTTL', KEYS[3]))}
end
local epoch = redis.call('HINCRBY', KEYS[2], 'epoch', 1)
redis.call('HSET', KEYS[2], 'status', 'running', 'worker', ARGV[1], 'updated_at', ARGV[3])
redis.call('SET', KEYS[3], ARGV[1] .. ':' .. epoch, 'PX', ARGV[2])
return {'claimed', tostring(epoch)}
