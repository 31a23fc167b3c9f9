-- Shared by the budget scripts (prepended to each). A scope is two keys: a hash with its
-- windows (`d` day number, `ds` spent, `dr` reserved; `m`, `ms`, `mr` the same for the month)
-- and one field `r:<id>` = "<amount> <day> <month>" per open reservation; and a sorted set of
-- those reservation ids scored by their expiry (ms, Redis server time). Counters are changed
-- with HINCRBY on decimal strings, so no amount is ever printed as a Lua float.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function num(v)
  return tonumber(v) or 0
end

-- Subtracts the decimal string `amt` from counter `f`, never below zero.
local function release(s, f, amt)
  if redis.call('HINCRBY', s, f, '-' .. amt) < 0 then
    redis.call('HSET', s, f, '0')
  end
end

-- Releases reservations past their expiry (their holder died or lost Redis): at most 100 per
-- call, so the work per decision stays bounded.
local function purge(s, x)
  local expired = redis.call('ZRANGEBYSCORE', x, '-inf', now, 'LIMIT', 0, 100)
  if #expired == 0 then
    return
  end
  local st = redis.call('HMGET', s, 'd', 'm')
  local d, m = num(st[1]), num(st[2])
  for _, rid in ipairs(expired) do
    local rec = redis.call('HGET', s, 'r:' .. rid)
    if rec then
      local amt, rd, rm = string.match(rec, '^(%d+) (%d+) (%d+)$')
      if amt then
        if tonumber(rd) == d then release(s, 'dr', amt) end
        if tonumber(rm) == m then release(s, 'mr', amt) end
      end
      redis.call('HDEL', s, 'r:' .. rid)
    end
  end
  redis.call('ZREM', x, unpack(expired))
end
