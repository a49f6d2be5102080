-- Forget delivered messages older than the audit period: their id and their audit record
-- (the monthly counts stay).
-- KEYS 1 sent  2 audit
-- ARGV 1 cut-off time  2 most to forget in this call
-- Returns how many were forgotten.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for first = 1, #ids, 500 do
  local slice = {unpack(ids, first, math.min(first + 499, #ids))}
  redis.call('ZREM', KEYS[1], unpack(slice))
  redis.call('HDEL', KEYS[2], unpack(slice))
end
return #ids
