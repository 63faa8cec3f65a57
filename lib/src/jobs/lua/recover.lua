-- Recovery moves the state machine does not allow to ordinary callers:
--   'lapsed': running → queued when no lease is alive (the worker died: one more lost attempt);
--   'replay': failed → queued (an operator replays a dead-lettered job), error and lost
--             attempts cleared;
--   'bump':   queued stays queued (its work item was lost and is published again).
-- Each counts the new queuing in `queued_count` and returns it, so the work item gets a fresh
-- Nats-Msg-Id.
-- KEYS[1] job hash, KEYS[2] lease key
-- ARGV[1] mode, ARGV[2] now ms, ARGV[3] key prefix
-- Returns {'ok', queued_count} | {'skip', status}
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'skip', 'missing'} end
local mode = ARGV[1]
local to = 'queued'
if mode == 'lapsed' then
  if status ~= 'running' or redis.call('EXISTS', KEYS[2]) == 1 then return {'skip', status} end
  redis.call('HINCRBY', KEYS[1], 'lost_attempts', 1)
elseif mode == 'replay' then
  if status ~= 'failed' then return {'skip', status} end
  redis.call('HDEL', KEYS[1], 'error', 'lost_attempts')
elseif mode == 'bump' then
  if status ~= 'queued' then return {'skip', status} end
else
  return {'skip', 'bad mode'}
end
local id = redis.call('HGET', KEYS[1], 'id')
local tenant = redis.call('HGET', KEYS[1], 'tenant')
if status ~= to then
  move_status(ARGV[3], tenant, id, status, to, ARGV[2])
  redis.call('HSET', KEYS[1], 'status', to)
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
local n = redis.call('HINCRBY', KEYS[1], 'queued_count', 1)
record(KEYS[1], status, to, 'recovered: ' .. mode, ARGV[2], redis.call('HGET', KEYS[1], 'epoch'))
return {'ok', tostring(n)}
