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
--   kI|kR:<user><url>     the user's clicks on that URL that day, as chains: 'a-b a-b' in
--                         seconds of the day, first and last click of each chain ('a-b:c' with
--                         a log session id: c is the client of the retained click b)
--   I:<session>           number of actions (Investigations or Requests) of the session on the
--                         item that day; R:<session> the Requests among them (Unique_Item_*)
--   v:<client>/d:<client> number of view / download actions of the client (daily unique)
--   n:<user>              usage lines of the user on the item that day (the volume rule)
--   _                     the hash exists, so it has its TTL
-- Volume rule (bots.volume): vol:<day> counts each user's usage lines of the UTC day (field
-- <user>); vol:<day>:items names the items with usage that day, and each item's day hash
-- the user's lines on it (n:<user>). A user that passes the limit is excluded for the whole
-- day: every action of theirs that day is taken back, their lines move to the month's robots
-- ('bot:volume' of acct:<month>), and later lines of theirs that day (their count is then
-- past the limit) count there directly.
-- Chains cross midnight: a day's last chain continues into the next day's first chain when the
-- gap is at most the window; the action is then the later day's. A chain is one action, at its
-- last click.
--
-- KEYS  8 per gatherer: ob:{g}:msg, :pending, :sent, :failed, :stats, :held (held: with ARGV
--         holding = 1, the run's messages not yet final, by event time), :meta, :retry
--       then 3 per day: vol:<day>, acct:<month>, vol:<day>:items
--       then 6 per item: c:, dly:, dv:, dd:, t:views:, t:dls:
--       then 1 per day hash <day>:{item}
--       (an excluded user's other items are reached by name: keys.py names them the same way)
-- ARGV  1 window s  2 due (score of a new pending message)  3 holding (0|1)  4 gatherers G
--       5 days D  6 items N  7 hashes H  8 volume limit (0: no volume rule)  9 hold s (with the
--       volume rule a message is not due before its day's end plus this)
--       then 7 per day: day number (epoch s // 86400), YYYY-MM-DD, YYYY-MM, TTL s of its hashes,
--         the next day's YYYY-MM-DD, the day before's YYYY-MM-DD and YYYY-MM
--       then 1 per item: its id
--       then 2 per hash: its day (1-based), its item (1-based)
--       then 1 + G per click: its head, then per gatherer the message JSON ('' when the click's
--         action would not go to that gatherer). The head (one string: few arguments are cheaper
--         than many):
--         '<ts> <sec> <hash> <prev> <next> <I|R> <h|s> L:<line> kI:<user><url> I:<session>
--          v:<client> <message id>' (kR: and d:<client> for a Request; the message id of the
--          action the click would be: pirus_bridge.counter.action_id, '-' without gatherers)
--         sec: seconds into its UTC day; hash: 1-based; prev/next: the neighbouring day's hash
--         of the item near midnight, 0 when not needed; h: the session is the user and the
--         hour (IP|User-Agent|day|HH) and the client is the user; s: the log's session id is
--         the user and the session. user, client: 16 hex digits; url: 8.
-- Returns five values per click, flattened: the change in the number of Investigation actions
-- and of Request actions, the change in double-click lines, the change in messages (+1
-- enqueued, -1 a superseded action's message withdrawn: a number with one gatherer, a list of G
-- numbers with several, 0 with none) and the change in robot lines (the volume rule); a line
-- already counted (a replay) gives 'r', 0, 0, 0, 0 and changes nothing.
local window = tonumber(ARGV[1])
local due = ARGV[2]
local holding = ARGV[3] == '1'
local ngatherers = tonumber(ARGV[4])
local ndays = tonumber(ARGV[5])
local nitems = tonumber(ARGV[6])
local nhashes = tonumber(ARGV[7])
local limit = tonumber(ARGV[8])
local hold = tonumber(ARGV[9])
local GK = 8                              -- keys per gatherer
local vbase = ngatherers * GK             -- KEYS[vbase + (d-1)*3 + 1] is day d's vol:
local ibase = vbase + ndays * 3           -- KEYS[ibase + (i-1)*6 + 1] is item i's c:
local hbase = ibase + nitems * 6          -- KEYS[hbase + h] is hash h
local dargs = 9                           -- ARGV[dargs + (d-1)*7 + 1] starts day d
local iargs = dargs + ndays * 7           -- ARGV[iargs + i] is item i's id
local hargs = iargs + nitems              -- ARGV[hargs + (h-1)*2 + 1] is hash h's day
local eargs = hargs + nhashes * 2         -- first click's head is ARGV[eargs + 1]
local estride = 1 + ngatherers
local nclicks = (#ARGV - eargs) / estride
local HEAD = '^(%d+) (%d+) (%d+) (%d+) (%d+) (%u) (%l) (%S+) (%S+) (%S+) (%S+) (%S+)$'
local ONE = '1' -- counts as strings: Lua would format a number with printf
local DAY = 86400

-- A day's strings and the hash fields of its month's COUNTER metrics.
local function day_info(start, day, month)
  return {
    start = start, day = day, month = month, num = string.format('%d', start / DAY),
    TII = month .. ':TII', UII = month .. ':UII', TIR = month .. ':TIR', UIR = month .. ':UIR',
    DC = month .. ':DC', v = day .. ':v', d = day .. ':d',
  }
end

local days = {}
for d = 1, ndays do
  local a = dargs + (d - 1) * 7
  local info = day_info(tonumber(ARGV[a + 1]) * DAY, ARGV[a + 2], ARGV[a + 3])
  info.ttl = ARGV[a + 4]
  info.next = ARGV[a + 5]
  info.prev = day_info(info.start - DAY, ARGV[a + 6], ARGV[a + 7])
  info.vol = KEYS[vbase + (d - 1) * 3 + 1]
  info.acct = KEYS[vbase + (d - 1) * 3 + 2]
  info.items = KEYS[vbase + (d - 1) * 3 + 3]
  days[d] = info
end

-- A day hash and the keys of its item, by name: {key, day, id, c, dly, dv, dd, tv, td}.
local function hash_of(key, info, id, item_keys)
  return {key = key, day = info, id = id, c = item_keys[1], dly = item_keys[2],
          dv = item_keys[3], dd = item_keys[4], tv = item_keys[5], td = item_keys[6]}
end

local hashes = {}
for h = 1, nhashes do
  local a = hargs + (h - 1) * 2
  local i = tonumber(ARGV[a + 2])
  local ik = ibase + (i - 1) * 6
  hashes[h] = hash_of(KEYS[hbase + h], days[tonumber(ARGV[a + 1])], ARGV[iargs + i],
                      {KEYS[ik + 1], KEYS[ik + 2], KEYS[ik + 3], KEYS[ik + 4], KEYS[ik + 5],
                       KEYS[ik + 6]})
end

-- A message already delivered or given up on is never enqueued again; a backfill usually has
-- no sent/failed sets yet: look once, not once per message.
local delivered = {}
for g = 0, ngatherers - 1 do
  delivered[g] = redis.call('EXISTS', KEYS[g * GK + 3], KEYS[g * GK + 4]) > 0
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

-- The seed's rule: one per client per item per day, into dly:, dv|dd: and t:views|dls:; a
-- client's first action of the day on the item (+1), or its last one withdrawn (-1). The date
-- sets hold day numbers (days since 1970-01-01): Redis keeps a set of integers as an intset.
local function daily_unique(hh, request, delta)
  local info = hh.day
  local field, dates, total = info.v, hh.dv, hh.tv
  if request then
    field, dates, total = info.d, hh.dd, hh.td
  end
  if delta > 0 then
    if redis.call('HINCRBY', hh.dly, field, 1) == 1 then
      redis.call('SADD', dates, info.num)
    end
    redis.call('INCR', total)
  else
    if redis.call('HINCRBY', hh.dly, field, -1) <= 0 then
      redis.call('HDEL', hh.dly, field)
      redis.call('SREM', dates, info.num)
    end
    redis.call('DECR', total)
  end
end

-- A Total metric moves by delta, and its Unique metric when the session's count of actions
-- (field of the day hash) becomes one or reaches zero.
local function tally(key, field, metrics, total, unique, delta)
  redis.call('HINCRBY', metrics, total, delta)
  local n = redis.call('HINCRBY', key, field, delta)
  if n == 1 and delta > 0 then
    redis.call('HINCRBY', metrics, unique, 1)
  elseif n <= 0 then
    redis.call('HDEL', key, field)
    redis.call('HINCRBY', metrics, unique, -1)
  end
end

-- The effects of one action (at second sec of hash hh's day) appearing (+1) or going (-1).
local function apply(hh, sec, request, session, client, delta)
  local key, info = hh.key, hh.day
  local metrics = hh.c
  tally(key, 'I:' .. session, metrics, info.TII, info.UII, delta)
  if request then
    tally(key, 'R:' .. session, metrics, info.TIR, info.UIR, delta)
  end
  local kind = request and 'd:' or 'v:'
  local n = redis.call('HINCRBY', key, kind .. client, delta)
  if n == 1 and delta > 0 then
    daily_unique(hh, request, 1)
  elseif n <= 0 then
    redis.call('HDEL', key, kind .. client)
    daily_unique(hh, request, -1)
  end
end

local HOURS = {}
for h = 0, 23 do
  HOURS[h] = string.format('%02d', h)
end

local function session_of(kind, user, sec)
  if kind == 'h' then
    return user .. HOURS[math.floor(sec / 3600)]
  end
  return user
end

local net = {} -- per gatherer: the change in its messages, for the click in hand
-- Messages enqueued by this call, per gatherer: id -> month; their ZADDs are issued once, at
-- the end (one command for many), after any withdrawal later in the call has taken them out.
local fresh, fresh_ts, fresh_due = {}, {}, {}
for g = 0, ngatherers - 1 do
  fresh[g] = {}
end

-- An action that is superseded: its counts go, and so does its message where still pending.
-- Where a gatherer already has (or is being sent) it, covered[g] is set: the action that takes
-- its place must not be sent to that gatherer again.
local function withdraw(hh, sec, seg_client, request, kind, user, field, covered)
  local client = seg_client ~= '' and seg_client or user
  apply(hh, sec, request, session_of(kind, user, sec), client, -1)
  if ngatherers == 0 then
    return
  end
  local id = action_id(hh.id, field, hh.day.start + sec)
  for g = 0, ngatherers - 1 do
    local ob = g * GK
    local mine = fresh[g][id]
    if mine then -- enqueued earlier in this call: its ZADD has not been issued yet
      fresh[g][id] = nil
      redis.call('HDEL', KEYS[ob + 1], id)
      note_qualified(g, mine, -1)
      net[g + 1] = net[g + 1] - 1
    elseif redis.call('ZREM', KEYS[ob + 2], id) == 1 then
      redis.call('HDEL', KEYS[ob + 1], id)
      redis.call('HDEL', KEYS[ob + 7], id) -- a message tried before keeps a history
      redis.call('ZREM', KEYS[ob + 8], id)
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
end

local function count_string(n)
  return n == 1 and ONE or tostring(n)
end

-- keys.tag: an item id as a Cluster hash tag, braces inside it replaced
local function tag(item)
  local t = string.gsub(string.gsub(item, '{', '('), '}', ')')
  return '{' .. t .. '}'
end

-- The day hash of any item on one of the batch's days, with its item's keys, by name.
local function item_hash(info, item)
  local t = tag(item)
  return hash_of(info.day .. ':' .. t, info, item,
                 {'c:' .. t, 'dly:' .. t, 'dv:' .. t, 'dd:' .. t, 't:views:' .. t,
                  't:dls:' .. t})
end

-- The volume rule: take back every action of the user on the day and turn all their lines of
-- the day into robot lines. Returns the lines and the Investigation / Request actions taken
-- back, and the double-click lines that are no longer double-clicks.
local function exclude(user, kind, info)
  local lines, dI, dR, ddc = 0, 0, 0, 0
  local covered = {}
  -- the items of the day on which the user has lines (rare: no index of its own is kept)
  for _, item in ipairs(redis.call('SMEMBERS', info.items)) do
    local hh = item_hash(info, item)
    local n = tonumber(redis.call('HGET', hh.key, 'n:' .. user)) or 0
    local actions = 0
    local cursor = '0'
    repeat
      local page = redis.call('HSCAN', hh.key, cursor, 'MATCH', 'k?:' .. user .. '*',
                              'COUNT', 1000)
      cursor = page[1]
      local found = page[2]
      for j = 1, #found, 2 do
        local field = found[j]
        local request = string.sub(field, 2, 2) == 'R'
        local segs = parse(found[j + 1])
        local next_first = nil
        local last = segs[#segs]
        if last and last[2] >= DAY - window then
          local nsegs = parse(redis.call('HGET', info.next .. ':' .. tag(item), field))
          if nsegs[1] then
            next_first = nsegs[1][1] + DAY
          end
        end
        for _, x in ipairs(ends(segs, next_first)) do
          withdraw(hh, x[1], x[2], request, kind, user, field, covered)
          actions = actions + 1
          if request then
            dR = dR - 1
          else
            dI = dI - 1
          end
        end
        -- A chain of the day before that went on into this day had its action taken by this
        -- day's chain: with this day's lines gone, it is an action again. (Its message was
        -- withdrawn when it was superseded and is not sent again: the rare price of exactness
        -- in the counts.)
        if segs[1] and segs[1][1] < window then
          local before = item_hash(info.prev, item)
          local psegs = parse(redis.call('HGET', before.key, field))
          local last = psegs[#psegs]
          if last and DAY - last[2] + segs[1][1] <= window then
            local client = last[3] ~= '' and last[3] or user
            apply(before, last[2], request, session_of(kind, user, last[2]), client, 1)
            redis.call('HINCRBY', before.c, before.day.DC, -1)
            ddc = ddc - 1
            if request then
              dR = dR + 1
            else
              dI = dI + 1
            end
          end
        end
        redis.call('HDEL', hh.key, field)
      end
    until cursor == '0'
    if n > actions then
      redis.call('HINCRBY', hh.c, info.DC, actions - n)
      ddc = ddc + actions - n
    end
    redis.call('HDEL', hh.key, 'n:' .. user)
    lines = lines + n
  end
  return lines, dI, dR, ddc
end

local volume_days = {} -- days whose volume keys this call wrote: their TTL is set once, at the end
local out = {}
local function reply(dI, dR, dd, robots)
  out[#out + 1] = dI
  out[#out + 1] = dR
  out[#out + 1] = dd
  if ngatherers == 1 then
    out[#out + 1] = net[1]
  elseif ngatherers == 0 then
    out[#out + 1] = 0
  else
    out[#out + 1] = {unpack(net, 1, ngatherers)}
  end
  out[#out + 1] = robots
end

for e = 0, nclicks - 1 do
  local a = eargs + e * estride
  local at, secs, hx, px, nx, code, kind, lfield, field, ifield, cfield, id =
    string.match(ARGV[a + 1], HEAD)
  local hh = hashes[tonumber(hx)]
  local key, info = hh.key, hh.day
  local request = code == 'R'
  local user = string.sub(field, 4, 19)
  local nfield = 'n:' .. user
  local rfield, seen
  if request then
    rfield = 'R' .. string.sub(ifield, 2)
    seen = redis.call('HMGET', key, lfield, field, '_', ifield, cfield, nfield, rfield)
  else
    seen = redis.call('HMGET', key, lfield, field, '_', ifield, cfield, nfield)
  end
  for g = 1, ngatherers do
    net[g] = 0
  end
  -- The volume rule first: a user already excluded for the day, or who now passes the limit.
  local volume = nil -- nil: counted as usage; else the robot lines this click makes
  local vdI, vdR, vdd = 0, 0, 0
  if not seen[1] and limit > 0 then
    local n = redis.call('HINCRBY', info.vol, user, ONE)
    volume_days[info] = true
    if n > limit + 1 then -- excluded already
      volume = 1
    elseif n > limit then -- this line passes the limit
      local lines
      lines, vdI, vdR, vdd = exclude(user, kind, info)
      volume = lines + 1
    end
    if not seen[3] then
      redis.call('SADD', info.items, hh.id)
    end
  end
  if seen[1] then
    out[#out + 1] = 'r'
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = 0
  elseif volume then
    redis.call('HINCRBY', info.acct, 'bot:volume', volume)
    redis.call('HSET', key, lfield, ONE, '_', ONE)
    if not seen[3] then
      redis.call('EXPIRE', key, info.ttl)
    end
    reply(vdI, vdR, vdd, volume)
  else
    local nlines = count_string((tonumber(seen[6]) or 0) + 1)
    px, nx = tonumber(px), tonumber(nx)
    local da, dd = 0, 1
    local covered = nil
    local added = false
    if not seen[2] and px == 0 and nx == 0 then
      -- the usual case: the user's first click on this URL that day, far from midnight; a
      -- new action whose session and client counts were read above
      added = true
      da, dd = 1, 0
      local metrics = hh.c
      redis.call('HINCRBY', metrics, info.TII, ONE)
      local ni = (tonumber(seen[4]) or 0) + 1
      local nc = (tonumber(seen[5]) or 0) + 1
      if ni == 1 then
        redis.call('HINCRBY', metrics, info.UII, ONE)
      end
      if nc == 1 then
        daily_unique(hh, request, 1)
      end
      local chain = secs .. '-' .. secs
      if kind == 's' then
        chain = chain .. ':' .. string.sub(cfield, 3)
      end
      if request then
        redis.call('HINCRBY', metrics, info.TIR, ONE)
        local nr = (tonumber(seen[7]) or 0) + 1
        if nr == 1 then
          redis.call('HINCRBY', metrics, info.UIR, ONE)
        end
        redis.call('HSET', key, lfield, ONE, field, chain, ifield, count_string(ni),
                   cfield, count_string(nc), rfield, count_string(nr), nfield, nlines, '_', ONE)
      else
        redis.call('HSET', key, lfield, ONE, field, chain, ifield, count_string(ni),
                   cfield, count_string(nc), nfield, nlines, '_', ONE)
      end
    else
      covered = {}
      local sec = tonumber(secs)
      local client = string.sub(cfield, 3)
      local c = kind == 's' and client or ''
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
            withdraw(hh, x[1], x[2], request, kind, user, field, covered)
            redis.call('HINCRBY', hh.c, info.DC, ONE)
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
              withdraw(prev_hh, last[2], last[3], request, kind, user, field, covered)
              redis.call('HINCRBY', prev_hh.c, prev_hh.day.DC, ONE)
              da, dd = da - 1, dd + 1
            end
          end
        end
        redis.call('HSET', key, lfield, ONE, field, render(segs), nfield, nlines, '_', ONE)
      else
        redis.call('HSET', key, lfield, ONE, nfield, nlines, '_', ONE)
      end
      if added then
        da, dd = da + 1, dd - 1
        apply(hh, sec, request, string.sub(ifield, 3), client, 1)
      end
    end
    if added then
      if ngatherers > 0 then
        local mdue = due
        if limit > 0 and info.start + DAY + hold > tonumber(due) then
          mdue = tostring(info.start + DAY + hold) -- the volume rule decides at the day's end
        end
        for g = 0, ngatherers - 1 do
          local ob = g * GK
          local body = ARGV[a + 2 + g]
          if body ~= '' and not (covered and covered[g]) and not fresh[g][id]
             and (not delivered[g]
                  or (redis.call('ZSCORE', KEYS[ob + 3], id) == false
                      and redis.call('ZSCORE', KEYS[ob + 4], id) == false))
             and redis.call('HSETNX', KEYS[ob + 1], id, body) == 1 then
            fresh[g][id] = info.month
            fresh_ts[id] = at
            fresh_due[id] = mdue
            note_qualified(g, info.month, 1)
            net[g + 1] = net[g + 1] + 1
          end
        end
      end
    else
      -- this click is not an action: a double-click line of its own month
      redis.call('HINCRBY', hh.c, info.DC, ONE)
    end
    if not seen[3] then
      -- a new hash gets its TTL at once, so it never lives without one
      redis.call('EXPIRE', key, info.ttl)
    end
    if request then
      reply(0, da, dd, 0)
    else
      reply(da, 0, dd, 0)
    end
  end
end

for info in pairs(volume_days) do
  redis.call('EXPIRE', info.vol, info.ttl)
  redis.call('EXPIRE', info.items, info.ttl)
end

-- Issue the gathered ZADDs (unpack is given at most 500 values at a time: Lua's stack limit).
local function each_chunk(list, fn)
  for i = 1, #list, 500 do
    fn(unpack(list, i, math.min(i + 499, #list)))
  end
end
for g = 0, ngatherers - 1 do
  local pending, held = {}, {}
  for id in pairs(fresh[g]) do
    pending[#pending + 1] = fresh_due[id]
    pending[#pending + 1] = id
    if holding then
      held[#held + 1] = fresh_ts[id]
      held[#held + 1] = id
    end
  end
  each_chunk(pending, function(...) redis.call('ZADD', KEYS[g * GK + 2], ...) end)
  each_chunk(held, function(...) redis.call('ZADD', KEYS[g * GK + 6], ...) end)
end

for g, months in pairs(qualified) do
  for month, n in pairs(months) do
    if n ~= 0 then
      redis.call('HINCRBY', KEYS[g * GK + 5], 'qualified:' .. month, n)
    end
  end
end
return out
