-- Records that a running job is playable (its first chunk and audio range are committed),
-- once, and only for the attempt (ARGV[1]) that runs it; the `playable` event goes into the
-- outbox in the same step, so it is published even if the worker dies right after.
-- KEYS[1] job hash, KEYS[2] outbox list
-- ARGV[1] epoch, ARGV[2] now ms, ARGV[3] event JSON
-- Returns 'ok' | 'already' | 'fenced'
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 'fenced' end
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 'fenced' end
if redis.call('HEXISTS', KEYS[1], 'playable_at') == 1 then return 'already' end
redis.call('HSET', KEYS[1], 'playable_at', ARGV[2], 'updated_at', ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[3])
return 'ok'
