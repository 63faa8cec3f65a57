-- Create a job (and its idempotency record) atomically.
-- KEYS[1] job hash, KEYS[2] tenant index, KEYS[3] tenant+status index, KEYS[4] global status
-- index (both for the initial status), KEYS[5] idempotency key (a placeholder when ARGV[8] is
-- '0': every key named must be one the service's Redis user may touch)
-- ARGV[1] id, ARGV[2] tenant, ARGV[3] spec JSON, ARGV[4] now ms, ARGV[5] fingerprint,
-- ARGV[6] idempotency TTL seconds, ARGV[7] upload key, ARGV[8] whether an idempotency key is used,
-- ARGV[9] initial status (awaiting_upload, or uploaded for an object already in the bucket),
-- ARGV[10] source JSON ('' when awaiting its upload), ARGV[11] origin JSON
-- Returns {'created', id} | {'existing', id, fingerprint}
if ARGV[8] == '1' then
  local existing = redis.call('GET', KEYS[5])
  if existing then
    local earlier = cjson.decode(existing)
    return {'existing', earlier.job_id, earlier.fingerprint}
  end
end
redis.call('HSET', KEYS[1],
  'id', ARGV[1], 'tenant', ARGV[2], 'status', ARGV[9], 'spec', ARGV[3],
  'epoch', 0, 'attempts', 0, 'created_at', ARGV[4], 'updated_at', ARGV[4],
  'upload_key', ARGV[7], 'origin', ARGV[11])
if ARGV[10] ~= '' then
  redis.call('HSET', KEYS[1], 'source', ARGV[10])
end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
record(KEYS[1], nil, ARGV[9], 'created', ARGV[4], 0)
if ARGV[8] == '1' then
  redis.call('SET', KEYS[5], cjson.encode({job_id = ARGV[1], fingerprint = ARGV[5]}),
    'EX', tonumber(ARGV[6]))
end
return {'created', ARGV[1]}
