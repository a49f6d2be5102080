-- Count usage events under the COUNTER R5 rules, atomically and in order; enqueue each counted
-- event for the gatherers it qualifies for. One call counts a whole batch (the bulk path) or a
-- single event: each event is decided exactly as if it had its own call.
--
-- KEYS  1 objectitems
--       then 5 per gatherer: ob:{g}:msg, ob:{g}:pending, ob:{g}:sent, ob:{g}:failed, ob:{g}:stats
--       then 7 per event:
--         dc:{item}:<user>:<I|R>   last click of the double-click chain
--         c:{item}                 COUNTER metrics hash (YYYY-MM:TII|UII|TIR|UIR)
--         us:{item}:<day>          sessions that used the item that day (<session>:I|R)
--         <day>:{item}:<v|d>       daily-unique clients (the seed's rule)
--         dly:{item}               daily-unique series hash (<day>:v|d)
--         dv|dd:{item}             dates with views / downloads
--         t:views|t:dls:{item}     all-time daily-unique total
-- ARGV  1 double-click window s  2 chain TTL s  3 now  4 number of gatherers G
--       then 8 + 2G per event: ts, month, day, I|R, session hash, client hash, day-state TTL s,
--         item id, then per gatherer: message id ('' when not for that gatherer), message JSON
-- Returns {counted (0|1), messages enqueued} per event, flattened.
--
-- Writes to keys that every event of a batch shares (objectitems, ob:{g}:pending, ob:{g}:stats)
-- are gathered and issued once at the end; nothing in the script reads them, so the final state
-- is the same. (Gathering the per-item writes too costs more in Lua tables than it saves.)
local window = tonumber(ARGV[1])
local chain_ttl = ARGV[2]
local now = ARGV[3]
local ngatherers = tonumber(ARGV[4])
local kbase = 2 + ngatherers * 5
local astride = 8 + ngatherers * 2
local nevents = (#ARGV - 4) / astride

local items = {}     -- objectitems members
local expiring = {}  -- dedupe sets given their TTL in this call
local pending = {}   -- gatherer index -> list of message ids (ZADD)
local qualified = {} -- gatherer index -> {month -> n} (HINCRBY)

-- A message already delivered or given up on is not enqueued again. A bulk backfill usually
-- has no sent/failed sets yet: look for them once, not once per message.
local delivered = {}
for g = 0, ngatherers - 1 do
  local ob = 2 + g * 5
  delivered[g] = redis.call('EXISTS', KEYS[ob + 2], KEYS[ob + 3]) > 0
end

local out = {}
for e = 0, nevents - 1 do
  local k = kbase + e * 7
  local a = 4 + e * astride
  local ts = tonumber(ARGV[a + 1])
  local counted = 1
  -- COUNTER double-click: a click <= window after the previous one extends the chain. The key
  -- keeps the latest click seen, so a late line cannot shorten a chain.
  local previous = redis.call('SET', KEYS[k], ARGV[a + 1], 'EX', chain_ttl, 'GET')
  if previous then
    local last = tonumber(previous)
    if ts < last then
      redis.call('SET', KEYS[k], previous, 'EX', chain_ttl)
    end
    if math.abs(ts - last) <= window then
      counted = 0
    end
  end

  local enqueued = 0
  if counted == 1 then
    local month, day, code = ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
    local session, day_ttl = ARGV[a + 5], ARGV[a + 7]
    local metrics, sessions, clients = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
    -- Requests are also Investigations (COUNTER R5 §3.3.5).
    redis.call('HINCRBY', metrics, month .. ':TII', 1)
    local added = false
    if redis.call('SADD', sessions, session .. ':I') == 1 then
      redis.call('HINCRBY', metrics, month .. ':UII', 1)
      added = true
    end
    local kind = 'v'
    if code == 'R' then
      kind = 'd'
      redis.call('HINCRBY', metrics, month .. ':TIR', 1)
      if redis.call('SADD', sessions, session .. ':R') == 1 then
        redis.call('HINCRBY', metrics, month .. ':UIR', 1)
        added = true
      end
    end
    -- A dedupe set gets its TTL whenever a member is added, so it never lives without one
    -- (once per key and call is enough: the TTL only depends on the day).
    if added and not expiring[sessions] then
      redis.call('EXPIRE', sessions, day_ttl)
      expiring[sessions] = true
    end
    if redis.call('SADD', clients, ARGV[a + 6]) == 1 then
      if not expiring[clients] then
        redis.call('EXPIRE', clients, day_ttl)
        expiring[clients] = true
      end
      redis.call('HINCRBY', KEYS[k + 4], day .. ':' .. kind, 1)
      redis.call('SADD', KEYS[k + 5], day)
      redis.call('INCR', KEYS[k + 6])
    end
    items[ARGV[a + 8]] = true

    for g = 0, ngatherers - 1 do
      local ob = 2 + g * 5
      local id = ARGV[a + 9 + g * 2]
      if id ~= ''
         and (not delivered[g]
              or (redis.call('ZSCORE', KEYS[ob + 2], id) == false
                  and redis.call('ZSCORE', KEYS[ob + 3], id) == false))
         and redis.call('HSETNX', KEYS[ob], id, ARGV[a + 10 + g * 2]) == 1 then
        local ids = pending[g]
        if not ids then
          ids = {}
          pending[g] = ids
        end
        ids[#ids + 1] = id
        local months = qualified[g]
        if not months then
          months = {}
          qualified[g] = months
        end
        months[month] = (months[month] or 0) + 1
        enqueued = enqueued + 1
      end
    end
  end
  out[#out + 1] = counted
  out[#out + 1] = enqueued
end

-- Issue the gathered writes (unpack is given at most 500 values at a time: Lua's stack limit).
local function each_chunk(list, fn)
  for i = 1, #list, 500 do
    fn(unpack(list, i, math.min(i + 499, #list)))
  end
end

local list = {}
for item in pairs(items) do
  list[#list + 1] = item
end
each_chunk(list, function(...) redis.call('SADD', KEYS[1], ...) end)
for g, ids in pairs(pending) do
  local args = {}
  for _, id in ipairs(ids) do
    args[#args + 1] = now
    args[#args + 1] = id
  end
  each_chunk(args, function(...) redis.call('ZADD', KEYS[2 + g * 5 + 1], ...) end)
  for month, n in pairs(qualified[g]) do
    redis.call('HINCRBY', KEYS[2 + g * 5 + 4], 'qualified:' .. month, n)
  end
end
return out
