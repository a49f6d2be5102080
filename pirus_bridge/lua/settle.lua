-- Record the outcome of one delivery attempt.
-- KEYS 1 inflight  2 pending  3 msg  4 sent  5 failed  6 stats  7 meta
-- ARGV 1 action (sent|retry|release|fail)  2 id  3 now  4 month  5 due  6 meta JSON or ''
-- Returns 1 if applied, 0 if not (already delivered, or the lease was lost to another pusher).
local action, id = ARGV[1], ARGV[2]
if action == 'sent' then
  -- Delivered: whoever holds it now must not send it again; the raw event is dropped.
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  if redis.call('HDEL', KEYS[3], id) == 1 then
    -- A pusher whose lease ran out may have given up on it meanwhile: it is sent, not failed.
    if redis.call('ZREM', KEYS[5], id) == 1 then
      redis.call('HINCRBY', KEYS[6], 'failed:' .. ARGV[4], -1)
    end
    redis.call('ZADD', KEYS[4], ARGV[3], id)
    redis.call('HINCRBY', KEYS[6], 'sent:' .. ARGV[4], 1)
    redis.call('HDEL', KEYS[7], id)
    return 1
  end
  return 0
end
if redis.call('ZREM', KEYS[1], id) == 0 then
  return 0
end
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[7], id, ARGV[6])
end
if action == 'fail' then
  redis.call('ZADD', KEYS[5], ARGV[3], id)
  redis.call('HINCRBY', KEYS[6], 'failed:' .. ARGV[4], 1)
else
  redis.call('ZADD', KEYS[2], ARGV[5], id)
end
return 1
