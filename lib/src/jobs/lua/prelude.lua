-- Shared helpers, prepended to every job script.
-- Moves job `id` of `tenant` from status `from` to `to` in the per-tenant and global indexes
-- (the global index holds non-terminal jobs only, scored by the time of the change; ended
-- jobs are in `status:ended`, scored by when they ended, for the retention sweep).
local function is_terminal(status)
  return status == 'completed' or status == 'failed' or status == 'canceled' or status == 'expired'
end

local function move_status(prefix, tenant, id, from, to, now)
  redis.call('ZREM', prefix .. 'jobs:' .. tenant .. ':' .. from, id)
  redis.call('ZADD', prefix .. 'jobs:' .. tenant .. ':' .. to, 0, id)
  redis.call('ZREM', prefix .. 'status:' .. from, id)
  if is_terminal(to) then
    redis.call('ZADD', prefix .. 'status:ended', now, id)
  else
    redis.call('ZREM', prefix .. 'status:ended', id)
    redis.call('ZADD', prefix .. 'status:' .. to, now, id)
  end
end

-- Appends a state change to the job's history (last 100 kept).
local function record(job_key, from, to, reason, now, epoch)
  redis.call('RPUSH', job_key .. ':history',
    cjson.encode({at = tonumber(now), from = from, to = to, reason = reason, epoch = tonumber(epoch)}))
  redis.call('LTRIM', job_key .. ':history', -100, -1)
end

-- Forgets a split job's parts (hashes and leases) when it fails or is canceled: their outputs
-- are removed with the job's, so a job queued again (a replay) plans afresh. A completed job
-- keeps them: which attempt made each part, at what cost.
local function clear_parts(job_key)
  local parts = tonumber(redis.call('HGET', job_key, 'parts') or '0') or 0
  for k = 0, parts - 1 do
    redis.call('DEL', job_key .. ':part:' .. k, job_key .. ':part:' .. k .. ':lease')
  end
  -- What played came from those parts: a replay plays (and says so) afresh.
  redis.call('HDEL', job_key, 'parts', 'parts_done', 'playable_at')
end
