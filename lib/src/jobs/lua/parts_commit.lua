-- Commits a part attempt (its outputs uploaded): only the part's current attempt, while the
-- job runs. The job's count of committed parts goes up in the same step, so whoever sees it
-- reach the total knows every part is in.
-- KEYS[1] job hash, KEYS[2] part hash, KEYS[3] part lease
-- ARGV[1] epoch, ARGV[2] now ms, ARGV[3..] field/value pairs to record on the part
-- Returns {'ok', parts_done, parts} | {'fenced', reason}
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' then return {'fenced', 'job ' .. (status or 'missing')} end
local part = redis.call('HGET', KEYS[2], 'status')
local epoch = redis.call('HGET', KEYS[2], 'epoch')
-- The same attempt's commit already landed (a retry after a lost answer): done.
if part == 'done' and epoch == ARGV[1] then
  return {'ok', redis.call('HGET', KEYS[1], 'parts_done'), redis.call('HGET', KEYS[1], 'parts')}
end
if part ~= 'running' or epoch ~= ARGV[1] then return {'fenced', 'part ' .. (part or 'missing')} end
redis.call('HSET', KEYS[2], 'status', 'done', 'updated_at', ARGV[2])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('DEL', KEYS[3])
local done = redis.call('HINCRBY', KEYS[1], 'parts_done', 1)
return {'ok', tostring(done), redis.call('HGET', KEYS[1], 'parts')}
