-- Lease up to N due messages of one gatherer (atomic, so two pushers never get the same one).
-- KEYS 1 ob:{g}:pending  2 ob:{g}:inflight  3 ob:{g}:msg  4 ob:{g}:meta
-- ARGV 1 now  2 limit  3 lease deadline
-- Returns a flat list: id, message JSON, meta JSON ('' when none), …
local now = tonumber(ARGV[1])
-- Leases that ran out (a pusher died mid-batch) come back first: nothing is lost.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], now, id)
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local body = redis.call('HGET', KEYS[3], id)
  if body then
    redis.call('ZADD', KEYS[2], ARGV[3], id)
    out[#out + 1] = id
    out[#out + 1] = body
    out[#out + 1] = redis.call('HGET', KEYS[4], id) or ''
  end
end
return out
