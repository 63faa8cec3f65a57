-- One take from a token bucket: `capacity` tokens, refilled at `rate` per second. The state is
-- the tokens left and when they were counted; the key expires once the bucket would be full.
-- KEYS[1] bucket hash
-- ARGV[1] capacity, ARGV[2] rate per second, ARGV[3] now ms
-- Returns {1, 0} when a token was taken, {0, ms until one is available} otherwise.
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) / 1000 * rate)
local taken, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  taken = 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return {taken, wait}
