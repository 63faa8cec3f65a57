-- A split job's coordinator (the attempt holding the job's current epoch) records how many
-- parts the job has. Idempotent: a later coordinator (a new epoch after the first died)
-- finds the plan already there and gets the same count back; the parts keep their state.
-- KEYS[1] job hash
-- ARGV[1] coordinator epoch, ARGV[2] number of parts, ARGV[3] key prefix of part hashes
-- (`tcoder:job:<id>:part:`)
-- Returns {'ok', parts} | {'fenced', status}
local status = redis.call('HGET', KEYS[1], 'status')
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if status ~= 'running' or epoch ~= ARGV[1] then return {'fenced', status or ''} end
local existing = redis.call('HGET', KEYS[1], 'parts')
if existing then return {'ok', existing} end
local parts = tonumber(ARGV[2])
for k = 0, parts - 1 do
  redis.call('HSET', ARGV[3] .. k, 'status', 'pending', 'epoch', 0)
end
redis.call('HSET', KEYS[1], 'parts', parts, 'parts_done', 0)
return {'ok', tostring(parts)}
