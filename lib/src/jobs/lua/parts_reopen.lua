-- Hands a committed part out again when its outputs are gone from the store (an attempt whose
-- commit got no answer removed them, or the store lost them): pending, its result cleared, the
-- job's count of committed parts one lower. Only for the job's current coordinator, while the
-- job runs, and only if the part is still done at the epoch the stitch found it.
-- KEYS[1] job hash, KEYS[2] part hash
-- ARGV[1] job epoch (the coordinator's), ARGV[2] the part's epoch, ARGV[3] now ms
-- Returns 1 when reopened, 0 when anything moved meanwhile
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then
  return 0
end
if redis.call('HGET', KEYS[2], 'status') ~= 'done' or redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[2], 'status', 'pending', 'updated_at', ARGV[3])
redis.call('HDEL', KEYS[2], 'result')
redis.call('HINCRBY', KEYS[1], 'parts_done', -1)
return 1
