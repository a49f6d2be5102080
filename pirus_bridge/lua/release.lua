-- Release a bulk run's held messages: those whose action can no longer be superseded by a later
-- line of the run (event time before ARGV[1]) become due now. A message no longer pending
-- (already superseded and withdrawn) is left alone (ZADD XX).
-- KEYS  2 per gatherer: ob:{g}:pending, ob:{g}:held:<run>
-- ARGV  1 event-time bound (exclusive; '+inf' for all)  2 now
-- Returns the number of messages made due.
local bound, now = ARGV[1], ARGV[2]
local upper = bound == '+inf' and '+inf' or ('(' .. bound)
local released = 0
for k = 1, #KEYS, 2 do
  local pending, held = KEYS[k], KEYS[k + 1]
  local ids = redis.call('ZRANGEBYSCORE', held, '-inf', upper)
  for i = 1, #ids, 500 do
    local args = {}
    for j = i, math.min(i + 499, #ids) do
      args[#args + 1] = now
      args[#args + 1] = ids[j]
    end
    released = released + redis.call('ZADD', pending, 'XX', 'CH', unpack(args))
  end
  if #ids > 0 then
    redis.call('ZREMRANGEBYSCORE', held, '-inf', upper)
  end
end
return released
