-- Count one usage event under the COUNTER R5 rules, atomically; enqueue it for gatherers.
--
-- KEYS  1 dc:{item}:<user>:<I|R>   last click of the double-click chain
--       2 c:{item}                 COUNTER metrics hash (YYYY-MM:TII|UII|TIR|UIR)
--       3 us:{item}:<day>          sessions that used the item that day (<session>:I|R)
--       4 <day>:{item}:<v|d>       daily-unique clients (the seed's rule)
--       5 dly:{item}               daily-unique series hash (<day>:v|d)
--       6 dv|dd:{item}             dates with views / downloads
--       7 t:views|t:dls:{item}     all-time daily-unique total
--       8 objectitems
--       then 5 per gatherer: ob:{g}:msg, ob:{g}:pending, ob:{g}:sent, ob:{g}:failed, ob:{g}:stats
-- ARGV  1 ts  2 double-click window s  3 chain TTL s  4 month  5 day  6 I|R  7 session hash
--       8 client hash  9 day-state TTL s  10 item id  11 now
--       then 2 per gatherer: message id, message JSON
-- Returns {counted (0|1), messages enqueued}
local ts = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local last = redis.call('GET', KEYS[1])
if last then
  last = tonumber(last)
  -- COUNTER double-click: a click <= window after the previous one extends the chain.
  if math.abs(ts - last) <= window then
    if ts > last then
      redis.call('SET', KEYS[1], ts, 'EX', ARGV[3])
    end
    return {0, 0}
  end
  if ts > last then
    redis.call('SET', KEYS[1], ts, 'EX', ARGV[3])
  end
else
  redis.call('SET', KEYS[1], ts, 'EX', ARGV[3])
end

local month, day, code = ARGV[4], ARGV[5], ARGV[6]
local day_ttl = ARGV[9]
-- Requests are also Investigations (COUNTER R5 §3.3.5).
redis.call('HINCRBY', KEYS[2], month .. ':TII', 1)
if redis.call('SADD', KEYS[3], ARGV[7] .. ':I') == 1 then
  redis.call('HINCRBY', KEYS[2], month .. ':UII', 1)
end
if code == 'R' then
  redis.call('HINCRBY', KEYS[2], month .. ':TIR', 1)
  if redis.call('SADD', KEYS[3], ARGV[7] .. ':R') == 1 then
    redis.call('HINCRBY', KEYS[2], month .. ':UIR', 1)
  end
end
redis.call('EXPIRE', KEYS[3], day_ttl)

local kind = 'v'
if code == 'R' then kind = 'd' end
if redis.call('SADD', KEYS[4], ARGV[8]) == 1 then
  redis.call('HINCRBY', KEYS[5], day .. ':' .. kind, 1)
  redis.call('SADD', KEYS[6], day)
  redis.call('INCR', KEYS[7])
end
redis.call('EXPIRE', KEYS[4], day_ttl)
redis.call('SADD', KEYS[8], ARGV[10])

local enqueued = 0
local g = 0
while KEYS[9 + g * 5] do
  local k = 9 + g * 5
  local id = ARGV[12 + g * 2]
  if redis.call('ZSCORE', KEYS[k + 2], id) == false
     and redis.call('ZSCORE', KEYS[k + 3], id) == false
     and redis.call('HSETNX', KEYS[k], id, ARGV[13 + g * 2]) == 1 then
    redis.call('ZADD', KEYS[k + 1], ARGV[11], id)
    redis.call('HINCRBY', KEYS[k + 4], 'qualified:' .. month, 1)
    enqueued = enqueued + 1
  end
  g = g + 1
end
return {1, enqueued}
