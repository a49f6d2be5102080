-- One gatherer's outbox at a glance (outbox stats), in one round trip.
-- KEYS 1 pending  2 inflight  3 failed  4 stats  5 retry  6 msg  7 circuit
-- ARGV 1 now
-- Returns {pending, in flight, failed, sent, waiting (pending, not yet due), next due time or
-- '', retrying, enqueue time of the oldest retried message still undelivered or '', the due
-- time and body of the first pending message or '', '', the circuit hash as a flat list}.
local now = ARGV[1]
local sent = 0
local counters = redis.call('HGETALL', KEYS[4])
for i = 1, #counters, 2 do
  if string.sub(counters[i], 1, 5) == 'sent:' then
    sent = sent + tonumber(counters[i + 1])
  end
end
local later = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
-- ob:{g}:retry may keep an entry of a message that left the outbox another way (the counting
-- script retracting a superseded one): such entries are dropped here, a few at a time.
local oldest_retry = ''
for _ = 1, 20 do
  local head = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
  if not head[1] then
    break
  end
  if redis.call('ZSCORE', KEYS[1], head[1]) or redis.call('ZSCORE', KEYS[2], head[1]) then
    oldest_retry = head[2]
    break
  end
  redis.call('ZREM', KEYS[5], head[1])
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local first_due, first_body = '', ''
if first[1] then
  first_due = first[2]
  first_body = redis.call('HGET', KEYS[6], first[1]) or ''
end
return {
  redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3]),
  sent, redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf'), later[2] or '',
  redis.call('ZCARD', KEYS[5]), oldest_retry, first_due, first_body,
  redis.call('HGETALL', KEYS[7]),
}
