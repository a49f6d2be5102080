-- Lease up to N due messages of one gatherer (atomic, so two pushers never get the same one).
-- KEYS 1 ob:{g}:pending  2 ob:{g}:inflight  3 ob:{g}:msg  4 ob:{g}:meta
--      5 ob:{g}:circuit (optional): the gatherer's circuit breaker. With it the claim obeys the
--        circuit as it is at this moment, whichever pusher set it — the rule of
--        pirus_bridge.circuit.Circuit.claim_limit: nothing is leased while the gatherer is
--        paused (a 429's Retry-After) or its circuit is open before the next probe time, and one
--        message (the probe) once a probe is due.
-- ARGV 1 now  2 limit  3 lease deadline
-- Returns {circuit, claimed}: the circuit hash as a flat field, value list (empty without KEYS 5),
-- and a flat list: id, message JSON, meta JSON ('' when none), due time, …
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])

-- A batch's messages take one call per command, not one per message. Lua's unpack returns at
-- most a few thousand values, so long lists go in slices (an even size keeps ZADD pairs whole).
local SLICE = 1000
local function call_in_slices(command, key, list)
  local replies = {}
  for first = 1, #list, SLICE do
    local reply = redis.call(command, key, unpack(list, first, math.min(first + SLICE - 1, #list)))
    if type(reply) == 'table' then
      for _, value in ipairs(reply) do
        replies[#replies + 1] = value
      end
    end
  end
  return replies
end

-- Leases that ran out (a pusher died mid-batch) come back first: nothing is lost.
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], now, id)
end

local circuit = {}
if #KEYS >= 5 then
  circuit = redis.call('HGETALL', KEYS[5])
  local c = {}
  for i = 1, #circuit, 2 do
    c[circuit[i]] = circuit[i + 1]
  end
  if now < (tonumber(c['paused_until']) or 0) then
    limit = 0
  elseif c['state'] == 'open' then
    if now < (tonumber(c['next_probe']) or 0) then
      limit = 0
    else
      limit = math.min(limit, 1)
    end
  end
end

local out = {}
if limit > 0 then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
  if #due > 0 then
    local ids, scores = {}, {}
    for i = 1, #due, 2 do
      ids[#ids + 1] = due[i]
      scores[#scores + 1] = due[i + 1]
    end
    call_in_slices('ZREM', KEYS[1], ids)
    local bodies = call_in_slices('HMGET', KEYS[3], ids)
    local metas = {}  -- most messages have no delivery history: often none has
    if redis.call('HLEN', KEYS[4]) > 0 then
      metas = call_in_slices('HMGET', KEYS[4], ids)
    end
    local leases = {}
    for i, id in ipairs(ids) do
      if bodies[i] then
        leases[#leases + 1] = ARGV[3]
        leases[#leases + 1] = id
        out[#out + 1] = id
        out[#out + 1] = bodies[i]
        out[#out + 1] = metas[i] or ''
        out[#out + 1] = scores[i]
      end
    end
    call_in_slices('ZADD', KEYS[2], leases)
  end
end
return {circuit, out}
