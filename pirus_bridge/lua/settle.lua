-- Record the outcomes of delivery attempts, one or many in a call.
-- KEYS 1 inflight  2 pending  3 msg  4 sent  5 failed  6 stats  7 meta  8 audit  9 retry
-- ARGV 1 now, then 6 per message: action (sent|retry|release|fail), id, month, due,
--      meta JSON or '', and for sent the audit record ('' for none), for retry and release
--      the time the message was enqueued (its place in ob:{g}:retry)
-- Returns per message 1 if applied, 0 if not (already delivered, or the lease was lost to
-- another pusher).
local now = ARGV[1]
local out = {}
for i = 2, #ARGV, 6 do
  local action, id, month, due, meta, extra = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
    ARGV[i + 4], ARGV[i + 5]
  local applied = 0
  if action == 'sent' then
    -- Delivered: whoever holds it now must not send it again; the raw event is dropped.
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    if redis.call('HDEL', KEYS[3], id) == 1 then
      -- A pusher whose lease ran out may have given up on it meanwhile: it is sent, not failed.
      if redis.call('ZREM', KEYS[5], id) == 1 then
        redis.call('HINCRBY', KEYS[6], 'failed:' .. month, -1)
      end
      redis.call('ZADD', KEYS[4], now, id)
      redis.call('HINCRBY', KEYS[6], 'sent:' .. month, 1)
      redis.call('HDEL', KEYS[7], id)
      redis.call('ZREM', KEYS[9], id)
      if extra ~= '' then
        redis.call('HSET', KEYS[8], id, extra)
      end
      applied = 1
    end
  elseif redis.call('ZREM', KEYS[1], id) == 1 then
    if meta ~= '' then
      redis.call('HSET', KEYS[7], id, meta)
    end
    if action == 'fail' then
      redis.call('ZADD', KEYS[5], now, id)
      redis.call('HINCRBY', KEYS[6], 'failed:' .. month, 1)
      redis.call('ZREM', KEYS[9], id)
    else
      redis.call('ZADD', KEYS[2], due, id)
      if extra ~= '' then
        redis.call('ZADD', KEYS[9], extra, id)
      end
    end
    applied = 1
  end
  out[#out + 1] = applied
end
return out
