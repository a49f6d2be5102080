-- Count usage events under the COUNTER R5 rules, atomically and in order; enqueue each counted
-- event for the gatherers it qualifies for. One call counts a whole batch (the bulk path) or a
-- single event: each event is decided exactly as if it had its own call.
--
-- All dedupe state of an item on a UTC day is ONE hash, <day>:{item} (keys.day_state), fields:
--   cI:<user> / cR:<user>        event time of the latest click of the user's double-click chain
--   I:<session> / R:<session>    the session investigated / requested the item (Unique_Item_*)
--   v:<client> / d:<client>      the client viewed / downloaded the item (the seed's daily unique)
--   _                            the hash exists (so has its TTL) and the day is already in
--                                dv:{item} / dd:{item}: '', 'v', 'd' or 'vd'
--
-- KEYS  1 objectitems
--       then 5 per gatherer: ob:{g}:msg, ob:{g}:pending, ob:{g}:sent, ob:{g}:failed, ob:{g}:stats
--       then 5 per block (an item on a day, for one metric type): <day>:{item}, c:{item},
--         dly:{item}, then dv:{item}, t:views:{item} (Investigation) or dd:{item}, t:dls:{item}
--         (Request)
--       then the neighbouring days' <day>:{item} hashes that events near midnight consult
-- ARGV  1 double-click window s  2 now  3 gatherers G  4 days D  5 blocks B
--       then 4 per day: day number (epoch s // 86400), YYYY-MM-DD, YYYY-MM, day-state TTL s
--       then 1 per block: its item id
--       then 1 + G per event: its head, then per gatherer the message JSON ('' when none).
--         The head is one string (few arguments are cheaper to send than many):
--         '<ts> <block> <neighbour> <I|R> <user> <session> <client> <message id per gatherer>'
--         block: 0-based; neighbour: 1-based among the neighbouring hashes, 0 for none;
--         message id: '-' when the event does not go to that gatherer.
-- Returns {counted (0|1), messages enqueued} per event, flattened.
--
-- Writes that nothing here reads and that every event of a batch shares (objectitems,
-- ob:{g}:pending, ob:{g}:stats) are gathered and issued once at the end. (Gathering the per-item
-- writes too costs more in Lua tables than it saves: a batch rarely has an item twice.)
-- Counts are passed to Redis as strings: Lua formats a number with snprintf, which costs more
-- than the command.
local window = tonumber(ARGV[1])
local now = ARGV[2]
local ngatherers = tonumber(ARGV[3])
local ndays = tonumber(ARGV[4])
local nblocks = tonumber(ARGV[5])
local kbase = 1 + ngatherers * 5          -- KEYS[kbase + 1] is the first block's day hash
local nbase = kbase + nblocks * 5         -- KEYS[nbase + n] is the n-th neighbouring hash
local ibase = 5 + ndays * 4               -- ARGV[ibase + 1] is the first block's item
local abase = ibase + nblocks             -- ARGV[abase + 1] is the first event's head
local astride = 1 + ngatherers
local nevents = (#ARGV - abase) / astride
local HEAD = '^(%d+) (%d+) (%d+) (%u) (%S+) (%S+) (%S+) ?(.*)$'

-- Per day: its strings and the hash fields of the monthly COUNTER metrics.
local days = {}
for d = 0, ndays - 1 do
  local a = 5 + d * 4
  local n, day, month = tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3]
  days[n] = {
    day = day, ttl = ARGV[a + 4], start = n * 86400, month = month,
    TII = month .. ':TII', UII = month .. ':UII', TIR = month .. ':TIR', UIR = month .. ':UIR',
    v = day .. ':v', d = day .. ':d',
  }
end

local counted_blocks = {} -- block -> true (objectitems)
local pending = {}        -- gatherer index -> list of message ids (ZADD)
local qualified = {}      -- gatherer index -> {month -> n} (HINCRBY)

-- A message already delivered or given up on is not enqueued again. A bulk backfill usually
-- has no sent/failed sets yet: look for them once, not once per message.
local delivered = {}
for g = 0, ngatherers - 1 do
  local ob = 2 + g * 5
  delivered[g] = redis.call('EXISTS', KEYS[ob + 2], KEYS[ob + 3]) > 0
end

local out = {}
for e = 0, nevents - 1 do
  local a = abase + e * astride
  local at, block, neighbour, code, user, session, client, ids = string.match(ARGV[a + 1], HEAD)
  local ts = tonumber(at)
  block, neighbour = tonumber(block), tonumber(neighbour)
  local request = code == 'R'
  local k = kbase + block * 5 + 1
  local h = KEYS[k]
  local info = days[math.floor(ts / 86400)]

  local chain, isession, rsession, seen -- seen: chain, client, '_', I:session[, R:session]
  if request then
    chain, client = 'cR:' .. user, 'd:' .. client
    isession, rsession = 'I:' .. session, 'R:' .. session
    seen = redis.call('HMGET', h, chain, client, '_', isession, rsession)
  else
    chain, client, isession = 'cI:' .. user, 'v:' .. client, 'I:' .. session
    seen = redis.call('HMGET', h, chain, client, '_', isession)
  end

  -- COUNTER double-click: a click <= window after the previous one extends the chain. Each
  -- day's hash keeps the latest click seen that day, so a late line cannot shorten a chain. Near
  -- midnight the chain's latest click may be in the neighbouring day's hash: a later day's
  -- clicks are all later than this day's, an earlier day's all earlier.
  local mine = seen[1]
  local last = mine
  if neighbour > 0 then
    local other = redis.call('HGET', KEYS[nbase + neighbour], chain)
    if ts - info.start < window then -- the neighbour is the day before
      last = mine or other
    else                              -- the day after
      last = other or mine
    end
  end
  local counted = 1
  if last and math.abs(ts - tonumber(last)) <= window then
    counted = 0
  end

  local marks = seen[3]
  local new = {} -- field, value, … for one HSET
  if not mine or ts > tonumber(mine) then
    new[1] = chain
    new[2] = at
  end

  local enqueued = 0
  if counted == 1 then
    local metrics = KEYS[k + 1]
    -- Requests are also Investigations (COUNTER R5 §3.3.5).
    redis.call('HINCRBY', metrics, info.TII, '1')
    if not seen[4] then
      redis.call('HINCRBY', metrics, info.UII, '1')
      new[#new + 1] = isession
      new[#new + 1] = '1'
    end
    if request then
      redis.call('HINCRBY', metrics, info.TIR, '1')
      if not seen[5] then
        redis.call('HINCRBY', metrics, info.UIR, '1')
        new[#new + 1] = rsession
        new[#new + 1] = '1'
      end
    end
    -- The seed's rule: one per client per item per day, into dly:, dv|dd: and t:views|dls:.
    if not seen[2] then
      new[#new + 1] = client
      new[#new + 1] = '1'
      local kind, field = 'v', info.v
      if request then
        kind, field = 'd', info.d
      end
      redis.call('HINCRBY', KEYS[k + 2], field, '1')
      if marks ~= kind and marks ~= 'vd' then
        redis.call('SADD', KEYS[k + 3], info.day)
        marks = (marks and marks ~= '') and 'vd' or kind
        new[#new + 1] = '_'
        new[#new + 1] = marks
      end
      redis.call('INCR', KEYS[k + 4])
    end
    counted_blocks[block] = true

    for g = 0, ngatherers - 1 do
      local ob = 2 + g * 5
      local id = ids
      if ngatherers > 1 then
        id = string.match(ids, '^' .. string.rep('%S+ ', g) .. '(%S+)')
      end
      if id ~= '-'
         and (not delivered[g]
              or (redis.call('ZSCORE', KEYS[ob + 2], id) == false
                  and redis.call('ZSCORE', KEYS[ob + 3], id) == false))
         and redis.call('HSETNX', KEYS[ob], id, ARGV[a + 2 + g]) == 1 then
        local list = pending[g]
        if not list then
          list = {}
          pending[g] = list
        end
        list[#list + 1] = id
        local months = qualified[g]
        if not months then
          months = {}
          qualified[g] = months
        end
        months[info.month] = (months[info.month] or 0) + 1
        enqueued = enqueued + 1
      end
    end
  end

  if new[1] then
    if not marks then
      new[#new + 1] = '_'
      new[#new + 1] = ''
    end
    redis.call('HSET', h, unpack(new))
    -- A new hash gets its TTL at once, so it never lives without one; the TTL depends only on
    -- the day (counter.day_state_ttl), and '_' tells later events the hash has it.
    if not seen[3] then
      redis.call('EXPIRE', h, info.ttl)
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

local items = {}
for block in pairs(counted_blocks) do
  items[#items + 1] = ARGV[ibase + 1 + block]
end
each_chunk(items, function(...) redis.call('SADD', KEYS[1], ...) end)
for g, ids in pairs(pending) do
  local args = {}
  for _, id in ipairs(ids) do
    args[#args + 1] = now
    args[#args + 1] = id
  end
  each_chunk(args, function(...) redis.call('ZADD', KEYS[2 + g * 5 + 1], ...) end)
  for month, n in pairs(qualified[g]) do
    redis.call('HINCRBY', KEYS[2 + g * 5 + 4], 'qualified:' .. month, tostring(n))
  end
end
return out
