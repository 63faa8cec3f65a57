-- Deletes an ended job's record: the hash, its history, parts and leases, and its places in
-- every index; a tombstone naming its tenant stays for a while (a repeated DELETE by that
-- tenant answers as the first did). A job still moving is not deleted: cancel it first.
-- KEYS[1] job hash, KEYS[2] tombstone
-- ARGV[1] key prefix, ARGV[2] tombstone TTL seconds
-- Returns {'deleted', tenant} | {'missing', ''} | {'active', status}
local id = redis.call('HGET', KEYS[1], 'id')
if not id then return {'missing', ''} end
local tenant = redis.call('HGET', KEYS[1], 'tenant')
local status = redis.call('HGET', KEYS[1], 'status')
if not is_terminal(status) then return {'active', status} end
clear_parts(KEYS[1])
redis.call('DEL', KEYS[1], KEYS[1] .. ':history', KEYS[1] .. ':lease', KEYS[1] .. ':import')
redis.call('ZREM', ARGV[1] .. 'jobs:' .. tenant, id)
redis.call('ZREM', ARGV[1] .. 'jobs:' .. tenant .. ':' .. status, id)
redis.call('ZREM', ARGV[1] .. 'status:ended', id)
redis.call('SET', KEYS[2], tenant, 'EX', tonumber(ARGV[2]))
return {'deleted', tenant}
