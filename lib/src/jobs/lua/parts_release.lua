-- Ends a part attempt that did not commit, if it is still the part's current attempt: the
-- part is free for the next claim, or failed for good once `max failures` attempts failed
-- (the coordinator then fails or retries the job). A release at shutdown is no failure.
-- KEYS[1] part hash, KEYS[2] part lease
-- ARGV[1] epoch, ARGV[2] now ms, ARGV[3] '1' if the attempt failed, ARGV[4] max failures,
-- ARGV[5] the error (JSON, '' for none)
-- Returns {'pending' | 'failed' | 'fenced', failures}
local part = redis.call('HGET', KEYS[1], 'status')
if part ~= 'running' or redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then
  return {'fenced', ''}
end
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0') or 0
if ARGV[3] == '1' then failures = failures + 1 end
local next_status = 'pending'
if failures >= tonumber(ARGV[4]) then next_status = 'failed' end
redis.call('HSET', KEYS[1], 'status', next_status, 'failures', failures, 'updated_at', ARGV[2])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[5]) end
redis.call('DEL', KEYS[2])
return {next_status, tostring(failures)}
