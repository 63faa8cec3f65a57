-- A split job's coordinator (the attempt holding the job's current epoch) records its parts,
-- each with its definition. Idempotent: a later coordinator (a new epoch after the first
-- died or gave the job back) finds the plan there and keeps it — committed parts stay done;
-- parts that failed get another round (the job's own retries bound how many).
-- KEYS[1] job hash
-- ARGV[1] coordinator epoch, ARGV[2] key prefix of part hashes (`tcoder:job:<id>:part:`),
-- ARGV[3..] each part's definition
-- Returns {'ok', parts} | {'fenced', status}
local status = redis.call('HGET', KEYS[1], 'status')
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if status ~= 'running' or epoch ~= ARGV[1] then return {'fenced', status or ''} end
local existing = redis.call('HGET', KEYS[1], 'parts')
if existing then
  for k = 0, tonumber(existing) - 1 do
    if redis.call('HGET', ARGV[2] .. k, 'status') == 'failed' then
      redis.call('HSET', ARGV[2] .. k, 'status', 'pending', 'failures', 0)
    end
  end
  return {'ok', existing}
end
local parts = #ARGV - 2
for k = 0, parts - 1 do
  redis.call('HSET', ARGV[2] .. k, 'status', 'pending', 'epoch', 0, 'failures', 0, 'def', ARGV[k + 3])
end
redis.call('HSET', KEYS[1], 'parts', parts, 'parts_done', 0)
return {'ok', tostring(parts)}
