-- Move a job to a new status if its current status is one of the allowed ones; keep the
-- per-tenant and global status indexes and the history in step.
-- KEYS[1] job hash
-- ARGV[1] new status, ARGV[2] now ms, ARGV[3] allowed current statuses (comma-separated),
-- ARGV[4] reason, ARGV[5] key prefix, ARGV[6..] field/value pairs to set
-- Returns {'ok', previous} | {'missing', ''} | {'illegal', current}
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return {'missing', ''} end
local allowed = false
for s in string.gmatch(ARGV[3], '[^,]+') do
  if s == current then allowed = true end
end
if not allowed then return {'illegal', current} end
local id = redis.call('HGET', KEYS[1], 'id')
local tenant = redis.call('HGET', KEYS[1], 'tenant')
move_status(ARGV[5], tenant, id, current, ARGV[1], ARGV[2])
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'updated_at', ARGV[2])
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
if ARGV[1] == 'failed' or ARGV[1] == 'canceled' then
  clear_parts(KEYS[1])
end
record(KEYS[1], current, ARGV[1], ARGV[4], ARGV[2], redis.call('HGET', KEYS[1], 'epoch'))
return {'ok', current}
