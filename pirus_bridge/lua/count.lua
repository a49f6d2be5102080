-- Count usage clicks under the COUNTER R5.1 rules (pirus_bridge.counter states them in Python;
-- the tests hold the two together), atomically; enqueue each action for the gatherers it
-- qualifies for. One call takes a whole batch; each click is decided as if it had its own call.
--
-- The state is a function of the SET of clicks seen, whatever their order or how they are cut
-- into calls: a click later in event time may supersede an action counted before, and the counts
-- then move with it (R5.1 §7.2: the first click of a double-click is removed, the last kept).
--
-- Dedupe state of an item on a UTC day is ONE hash, <day>:{item} (keys.day_state), fields:
--   L:<line>              the log line was counted (a replay of it changes nothing)
--   k:<user><url>         the user's clicks on that URL that day, as chains: 'a-b a-b' in
--                         seconds of the day, first and last click of each chain ('a-b:c' with
--                         a log session id: c is the client of the retained click b)
--   I:<session>           number of actions (Investigations or Requests) of the session on the
--                         item that day; R:<session> the Requests among them (Unique_Item_*)
--   v:<client>/d:<client> number of view / download actions of the client (daily unique)
--   _                     the hash exists, so it has its TTL
-- Chains cross midnight: a day's last chain continues into the next day's first chain when the
-- gap is at most the window; the action is then the later day's. A chain is one action, at its
-- last click.
--
-- KEYS  6 per gatherer: ob:{g}:msg, :pending, :sent, :failed, :stats, :held (held: with ARGV
--         holding = 1, the run's messages not yet final, by event time)
--       then 6 per item: c:, dly:, dv:, dd:, t:views:, t:dls:
--       then 1 per day hash <day>:{item}
-- ARGV  1 window s  2 due (score of a new pending message)  3 holding (0|1)  4 gatherers G
--       5 days D  6 items N  7 hashes H
--       then 4 per day: day number (epoch s // 86400), YYYY-MM-DD, YYYY-MM, TTL s of its hashes
--       then 1 per item: its id
--       then 2 per hash: its day (1-based), its item (1-based)
--       then 1 + G per click: its head, then per gatherer the message JSON ('' when the click's
--         action would not go to that gatherer). The head (one string: few arguments are cheaper
--         than many):
--         '<ts> <hash> <prev hash> <next hash> <I|R> <h|s> <user> <url> <line> <client>'
--         hashes are 1-based; prev/next: the neighbouring day's hash of the item near midnight,
--         0 when not needed; h: the session is the user and the hour (IP|User-Agent|day|HH),
--         s: the log's session id is the user (client given separately; '-' for h).
-- Returns three values per click, flattened: the change in the number of actions (-1, 0, 1),
-- the change in double-click lines (0, 1, 2) and, per gatherer, the change in its messages (a
-- list of G numbers: +1 enqueued, -1 a superseded action's message withdrawn); a line already
-- counted (a replay) gives 'r', 0, {} and changes nothing.
local window = tonumber(ARGV[1])
local due = ARGV[2]
local holding = ARGV[3] == '1'
local ngatherers = tonumber(ARGV[4])
local ndays = tonumber(ARGV[5])
local nitems = tonumber(ARGV[6])
local nhashes = tonumber(ARGV[7])
local ibase = ngatherers * 6              -- KEYS[ibase + (i-1)*6 + 1] is item i's c:
local hbase = ibase + nitems * 6          -- KEYS[hbase + h] is hash h
local dargs = 7                           -- ARGV[dargs + (d-1)*4 + 1] starts day d
local iargs = dargs + ndays * 4           -- ARGV[iargs + i] is item i's id
local hargs = iargs + nitems              -- ARGV[hargs + (h-1)*2 + 1] is hash h's day
local eargs = hargs + nhashes * 2         -- first click's head is ARGV[eargs + 1]
local estride = 1 + ngatherers
local nclicks = (#ARGV - eargs) / estride
local HEAD = '^(%d+) (%d+) (%d+) (%d+) (%u) (%l) (%S+) (%S+) (%S+) (%S+)$'
local DAY = 86400

local days = {}
for d = 1, ndays do
  local a = dargs + (d - 1) * 4
  local month = ARGV[a + 3]
  days[d] = {
    start = tonumber(ARGV[a + 1]) * DAY, day = ARGV[a + 2], month = month, ttl = ARGV[a + 4],
    TII = month .. ':TII', UII = month .. ':UII', TIR = month .. ':TIR', UIR = month .. ':UIR',
    DC = month .. ':DC', v = ARGV[a + 2] .. ':v', d = ARGV[a + 2] .. ':d',
  }
end
local hashes = {}
for h = 1, nhashes do
  local a = hargs + (h - 1) * 2
  local i = tonumber(ARGV[a + 2])
  hashes[h] = {key = KEYS[hbase + h], day = days[tonumber(ARGV[a + 1])], item = i,
               id = ARGV[iargs + i], ik = ibase + (i - 1) * 6}
end

-- A message already delivered or given up on is never enqueued again; a backfill usually has
-- no sent/failed sets yet: look once, not once per message.
local delivered = {}
for g = 0, ngatherers - 1 do
  delivered[g] = redis.call('EXISTS', KEYS[g * 6 + 3], KEYS[g * 6 + 4]) > 0
end
local qualified = {} -- gatherer -> {month -> change} (HINCRBY once at the end)

local function note_qualified(g, month, n)
  local months = qualified[g]
  if not months then
    months = {}
    qualified[g] = months
  end
  months[month] = (months[month] or 0) + n
end

-- Chains: a sorted list of {first, last, client}; parse and render the field's text.
local function parse(text)
  local segs = {}
  if text then
    for a, b, c in string.gmatch(text, '(%d+)%-(%d+):?(%w*)') do
      segs[#segs + 1] = {tonumber(a), tonumber(b), c}
    end
  end
  return segs
end

local function render(segs)
  local parts = {}
  for i, s in ipairs(segs) do
    if s[3] ~= '' then
      parts[i] = s[1] .. '-' .. s[2] .. ':' .. s[3]
    else
      parts[i] = s[1] .. '-' .. s[2]
    end
  end
  return table.concat(parts, ' ')
end

-- The chains' action ends {second, client}: every chain's last click, except the day's last
-- chain when it continues into the next day (next: that day's first click, in this day's
-- seconds, or nil).
local function ends(segs, next_first)
  local out = {}
  local n = #segs
  for i = 1, n do
    local s = segs[i]
    if i < n or not next_first or next_first - s[2] > window then
      out[#out + 1] = {s[2], s[3]}
    end
  end
  return out
end

-- Add click s (second of the day) with client c to the chains, in place; false if it falls
-- inside a chain (then nothing changes).
local function insert(segs, s, c)
  local n, i = #segs, 1
  while i <= n and segs[i][2] < s do
    i = i + 1
  end
  local nxt, prev = segs[i], segs[i - 1]
  if nxt and nxt[1] <= s then
    return false
  end
  local jp = prev and s - prev[2] <= window
  local jn = nxt and nxt[1] - s <= window
  if jp and jn then
    prev[2], prev[3] = nxt[2], nxt[3]
    table.remove(segs, i)
  elseif jp then
    prev[2], prev[3] = s, c
  elseif jn then
    nxt[1] = s
  else
    table.insert(segs, i, {s, s, c})
  end
  return true
end

local function action_id(item, field, t)
  return string.sub(redis.sha1hex(item .. '\n' .. field .. '\n' .. t), 1, 24)
end

-- The effects of one action (at second sec of hash hh's day) appearing (+1) or going (-1).
local function apply(hh, sec, request, session, client, delta)
  local key, info, ik = hh.key, hh.day, hh.ik
  local metrics = KEYS[ik + 1]
  redis.call('HINCRBY', metrics, info.TII, delta)
  local n = redis.call('HINCRBY', key, 'I:' .. session, delta)
  if n == 1 and delta > 0 then
    redis.call('HINCRBY', metrics, info.UII, 1)
  elseif n <= 0 then
    redis.call('HDEL', key, 'I:' .. session)
    redis.call('HINCRBY', metrics, info.UII, -1)
  end
  if request then
    redis.call('HINCRBY', metrics, info.TIR, delta)
    n = redis.call('HINCRBY', key, 'R:' .. session, delta)
    if n == 1 and delta > 0 then
      redis.call('HINCRBY', metrics, info.UIR, 1)
    elseif n <= 0 then
      redis.call('HDEL', key, 'R:' .. session)
      redis.call('HINCRBY', metrics, info.UIR, -1)
    end
  end
  -- The seed's rule: one per client per item per day, into dly:, dv|dd: and t:views|dls:.
  local kind, field, dates, total = 'v', info.v, KEYS[ik + 3], KEYS[ik + 5]
  if request then
    kind, field, dates, total = 'd', info.d, KEYS[ik + 4], KEYS[ik + 6]
  end
  n = redis.call('HINCRBY', key, kind .. ':' .. client, delta)
  if n == 1 and delta > 0 then
    if redis.call('HINCRBY', KEYS[ik + 2], field, 1) == 1 then
      redis.call('SADD', dates, info.day)
    end
    redis.call('INCR', total)
  elseif n <= 0 then
    redis.call('HDEL', key, kind .. ':' .. client)
    if redis.call('HINCRBY', KEYS[ik + 2], field, -1) <= 0 then
      redis.call('HDEL', KEYS[ik + 2], field)
      redis.call('SREM', dates, info.day)
    end
    redis.call('DECR', total)
  end
end

local function session_of(kind, user, sec)
  if kind == 'h' then
    return user .. string.format('%02d', math.floor(sec / 3600))
  end
  return user
end

-- An action that is superseded: its counts go, and so does its message where still pending.
-- Returns whether some gatherer already has (or is sending) it: then the action that takes its
-- place must not be sent again to that gatherer.
local net = {} -- per gatherer: the change in its messages, for the click in hand

local function withdraw(hh, sec, request, kind, user, client, field)
  apply(hh, sec, request, session_of(kind, user, sec), client, -1)
  redis.call('HINCRBY', KEYS[hh.ik + 1], hh.day.DC, 1)
  local covered = {}
  if ngatherers == 0 then
    return covered
  end
  local id = action_id(hh.id, field, hh.day.start + sec)
  for g = 0, ngatherers - 1 do
    local ob = g * 6
    if redis.call('ZREM', KEYS[ob + 2], id) == 1 then
      redis.call('HDEL', KEYS[ob + 1], id)
      if holding then
        redis.call('ZREM', KEYS[ob + 6], id)
      end
      note_qualified(g, hh.day.month, -1)
      net[g + 1] = net[g + 1] - 1
    elseif redis.call('HEXISTS', KEYS[ob + 1], id) == 1
        or (delivered[g] and redis.call('ZSCORE', KEYS[ob + 3], id)) then
      covered[g] = true
    end
  end
  return covered
end

local out = {}
for e = 0, nclicks - 1 do
  local a = eargs + e * estride
  local at, hx, px, nx, code, kind, user, url, line, client = string.match(ARGV[a + 1], HEAD)
  local ts = tonumber(at)
  local hh = hashes[tonumber(hx)]
  local key, info = hh.key, hh.day
  local request = code == 'R'
  if kind == 'h' then
    client = user
  end
  local field = 'k:' .. user .. url
  local seen = redis.call('HMGET', key, 'L:' .. line, field, '_')
  for g = 1, ngatherers do
    net[g] = 0
  end
  if seen[1] then
    out[#out + 1] = 'r'
    out[#out + 1] = 0
    out[#out + 1] = {}
  else
    local sec = ts - info.start
    local c = kind == 's' and client or ''
    px, nx = tonumber(px), tonumber(nx)
    local da, dd = 0, 1
    local covered = {}
    local added = false
    if not seen[2] and px == 0 and nx == 0 then
      -- the usual case: the user's first click on this URL that day, far from midnight
      added = true
      redis.call('HSET', key, field, c ~= '' and (sec .. '-' .. sec .. ':' .. c)
                                               or (sec .. '-' .. sec))
    else
      local segs = parse(seen[2])
      -- The next day's first click, only near midnight.
      local next_first = nil
      if nx > 0 then
        local nsegs = parse(redis.call('HGET', hashes[nx].key, field))
        if nsegs[1] then
          next_first = nsegs[1][1] + DAY
        end
      end
      local before = ends(segs, next_first)
      local old_first = segs[1] and segs[1][1]
      if insert(segs, sec, c) then
        local after = ends(segs, next_first)
        local kept, had = {}, {}
        for _, x in ipairs(after) do
          kept[x[1]] = true
        end
        for _, x in ipairs(before) do
          had[x[1]] = true
          if not kept[x[1]] then
            for g in pairs(withdraw(hh, x[1], request, kind, user,
                                    x[2] ~= '' and x[2] or user, field)) do
              covered[g] = true
            end
            da, dd = da - 1, dd + 1
          end
        end
        for _, x in ipairs(after) do
          if not had[x[1]] then
            added = true -- only the new click itself can become a chain's end
          end
        end
        -- The day's first chain may now continue the day before's last: that action goes.
        if px > 0 and segs[1][1] < window then
          local prev_hh = hashes[px]
          local psegs = parse(redis.call('HGET', prev_hh.key, field))
          local last = psegs[#psegs]
          if last then
            local gap_now = DAY - last[2] + segs[1][1]
            local gap_was = old_first and (DAY - last[2] + old_first)
            if gap_now <= window and not (gap_was and gap_was <= window) then
              for g in pairs(withdraw(prev_hh, last[2], request, kind, user,
                                      last[3] ~= '' and last[3] or user, field)) do
                covered[g] = true
              end
              da, dd = da - 1, dd + 1
            end
          end
        end
        redis.call('HSET', key, field, render(segs))
      end
    end
    if added then
      da, dd = da + 1, dd - 1
      apply(hh, sec, request, session_of(kind, user, sec), client, 1)
      if ngatherers > 0 then
        local id = action_id(hh.id, field, ts)
        for g = 0, ngatherers - 1 do
          local ob = g * 6
          local body = ARGV[a + 2 + g]
          if body ~= '' and not covered[g]
             and (not delivered[g]
                  or (redis.call('ZSCORE', KEYS[ob + 3], id) == false
                      and redis.call('ZSCORE', KEYS[ob + 4], id) == false))
             and redis.call('HSETNX', KEYS[ob + 1], id, body) == 1 then
            redis.call('ZADD', KEYS[ob + 2], due, id)
            if holding then
              redis.call('ZADD', KEYS[ob + 6], ts, id)
            end
            note_qualified(g, info.month, 1)
            net[g + 1] = net[g + 1] + 1
          end
        end
      end
    end
    if not added then
      -- this click is not an action: a double-click line of its own month
      redis.call('HINCRBY', KEYS[hh.ik + 1], info.DC, 1)
    end
    if seen[3] then
      redis.call('HSET', key, 'L:' .. line, '1')
    else
      -- a new hash gets its TTL at once, so it never lives without one
      redis.call('HSET', key, 'L:' .. line, '1', '_', '1')
      redis.call('EXPIRE', key, info.ttl)
    end
    out[#out + 1] = da
    out[#out + 1] = dd
    out[#out + 1] = {unpack(net, 1, ngatherers)}
  end
end

for g, months in pairs(qualified) do
  for month, n in pairs(months) do
    if n ~= 0 then
      redis.call('HINCRBY', KEYS[g * 6 + 5], 'qualified:' .. month, n)
    end
  end
end
return out
