-- Record the outcomes of delivery attempts, one or many in a call.
-- KEYS 1 inflight  2 pending  3 msg  4 sent  5 failed  6 stats  7 meta  8 audit  9 retry
-- ARGV 1 now, then 6 per message: action (sent|retry|release|fail), id, month, due,
--      meta JSON or '' (for sent: '1' when the message has a delivery history to drop, else
--      ''), and for sent the audit record ('' for none), for retry and release the time the
--      message was enqueued (its place in ob:{g}:retry)
-- Returns per message 1 if applied, 0 if not (already delivered, or the lease was lost to
-- another pusher).
-- Delivered messages are most of a batch: their writes are gathered and issued once per key
-- at the end (in slices: Lua's unpack takes a few thousand values at most).
local now = ARGV[1]
local out = {}
local sent, audit, history, months = {}, {}, {}, {}
local some_failed = redis.call('ZCARD', KEYS[5]) > 0
for i = 2, #ARGV, 6 do
  local action, id, month, due, meta, extra = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
    ARGV[i + 4], ARGV[i + 5]
  local applied = 0
  if action == 'sent' then
    -- Delivered: whoever holds it now must not send it again; the raw event is dropped.
    if redis.call('HDEL', KEYS[3], id) == 1 then
      -- A pusher whose lease ran out may have given up on it meanwhile: it is sent, not failed.
      if some_failed and redis.call('ZREM', KEYS[5], id) == 1 then
        redis.call('HINCRBY', KEYS[6], 'failed:' .. month, -1)
      end
      sent[#sent + 1] = id
      months[month] = (months[month] or 0) + 1
      if extra ~= '' then
        audit[#audit + 1] = id
        audit[#audit + 1] = extra
      end
      if meta ~= '' then
        history[#history + 1] = id
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

local SLICE = 1000
local function each_slice(list, fn)
  for first = 1, #list, SLICE do
    fn(unpack(list, first, math.min(first + SLICE - 1, #list)))
  end
end
each_slice(sent, function(...) redis.call('ZREM', KEYS[1], ...) end)
each_slice(sent, function(...) redis.call('ZREM', KEYS[2], ...) end)
local scored = {}
for _, id in ipairs(sent) do
  scored[#scored + 1] = now
  scored[#scored + 1] = id
end
each_slice(scored, function(...) redis.call('ZADD', KEYS[4], ...) end)
each_slice(audit, function(...) redis.call('HSET', KEYS[8], ...) end)
each_slice(history, function(...) redis.call('HDEL', KEYS[7], ...) end)
each_slice(history, function(...) redis.call('ZREM', KEYS[9], ...) end)
for month, n in pairs(months) do
  redis.call('HINCRBY', KEYS[6], 'sent:' .. month, n)
end
return out
