-- Ends an attempt, only if it is still the current one (fencing): completed with its output
-- manifest, failed with its error, or back to queued for a retry. The terminal event goes into
-- the outbox in the same step, so it is published even if the worker dies right after.
-- KEYS[1] job hash, KEYS[2] lease key, KEYS[3] outbox list
-- ARGV[1] epoch, ARGV[2] new status (completed|failed|queued), ARGV[3] now ms, ARGV[4] key prefix,
-- ARGV[5] reason, ARGV[6] event JSON ('' for none), ARGV[7] the `playable` event JSON, recorded
-- (with `playable_at`) only if the job was not playable before ('' for none),
-- ARGV[8..] field/value pairs to set
-- Returns {'ok', ''} | {'fenced', status}
local status = redis.call('HGET', KEYS[1], 'status')
local epoch = redis.call('HGET', KEYS[1], 'epoch')
-- The same step by the same attempt already landed (a retry after a lost answer): done.
if status == ARGV[2] and epoch == ARGV[1] then
  return {'ok', 'already'}
end
if status ~= 'running' or epoch ~= ARGV[1] then
  return {'fenced', status or ''}
end
local id = redis.call('HGET', KEYS[1], 'id')
local tenant = redis.call('HGET', KEYS[1], 'tenant')
move_status(ARGV[4], tenant, id, 'running', ARGV[2], ARGV[3])
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'updated_at', ARGV[3])
for i = 8, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('DEL', KEYS[2])
if ARGV[2] == 'failed' then clear_parts(KEYS[1]) end
if ARGV[7] ~= '' and redis.call('HEXISTS', KEYS[1], 'playable_at') == 0 then
  redis.call('HSET', KEYS[1], 'playable_at', ARGV[3])
  redis.call('RPUSH', KEYS[3], ARGV[7])
end
if ARGV[6] ~= '' then
  redis.call('RPUSH', KEYS[3], ARGV[6])
end
record(KEYS[1], 'running', ARGV[2], ARGV[5], ARGV[3], ARGV[1])
return {'ok', ''}
