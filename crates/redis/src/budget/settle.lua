-- KEYS: the tombstone of the reservation, then per scope its hash and its expiry set.
-- ARGV: id, actual cost, day, month (of the request), tombstone TTL (ms), key TTL (ms), and
-- '1' for a cancel: release the reservation if it is held, charge nothing, leave no tombstone
-- (the id may still be reserved and settled for real afterwards).
-- Returns 1 when settled now, 0 when it had been settled already (then nothing changes).
local id, actual, day, month = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local tomb_ttl, key_ttl = tonumber(ARGV[5]), tonumber(ARGV[6])
local cancel = ARGV[7] == '1'
local dayn, monthn = tonumber(day), tonumber(month)
local n = (#KEYS - 1) / 2
local field = 'r:' .. id

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
for i = 1, n do
  local s, x = KEYS[2 * i], KEYS[2 * i + 1]
  purge(s, x)
  local st = redis.call('HMGET', s, 'd', 'm', field)
  local d, m, rec = num(st[1]), num(st[2]), st[3]
  local amt, rd, rm
  if rec then
    amt, rd, rm = string.match(rec, '^(%d+) (%d+) (%d+)$')
    redis.call('HDEL', s, field)
    redis.call('ZREM', x, id)
  end
  if cancel then
    if amt then
      if tonumber(rd) == d then release(s, 'dr', amt) end
      if tonumber(rm) == m then release(s, 'mr', amt) end
    end
  elseif amt then
    -- Released and charged in the windows it was reserved in, if they are still current.
    if tonumber(rd) == d then
      release(s, 'dr', amt)
      redis.call('HINCRBY', s, 'ds', actual)
    end
    if tonumber(rm) == m then
      release(s, 'mr', amt)
      redis.call('HINCRBY', s, 'ms', actual)
    end
  else
    -- No open reservation: it expired (and was released), or the request was admitted while
    -- Redis was unreachable. The cost still counts, in the request's own windows.
    if d < dayn then
      redis.call('HSET', s, 'd', day, 'ds', '0', 'dr', '0')
      d = dayn
    end
    if m < monthn then
      redis.call('HSET', s, 'm', month, 'ms', '0', 'mr', '0')
      m = monthn
    end
    if d == dayn then redis.call('HINCRBY', s, 'ds', actual) end
    if m == monthn then redis.call('HINCRBY', s, 'ms', actual) end
  end
  redis.call('PEXPIRE', s, key_ttl)
  redis.call('PEXPIRE', x, key_ttl)
end
if not cancel then
  redis.call('SET', KEYS[1], '1', 'PX', tomb_ttl)
end
return 1
