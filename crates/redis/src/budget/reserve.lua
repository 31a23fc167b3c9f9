-- KEYS: the tombstone of the reservation, then per scope its hash and its expiry set.
-- ARGV: id, amount, day, month, reservation TTL (ms), key TTL (ms), then per scope its daily
-- and monthly limits ('' when none). All decimal strings.
-- Returns {0, 0, '', 0} when reserved (or already reserved or settled under this id), else
-- {1, <index of the first scope without room>, 'd' | 'm', <least room left>}.
local id, amount, day, month = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local res_ttl, key_ttl = tonumber(ARGV[5]), tonumber(ARGV[6])
local amt, dayn, monthn = tonumber(amount), tonumber(day), tonumber(month)
local n = (#KEYS - 1) / 2
local field = 'r:' .. id

if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, 0, '', 0}
end
if n > 0 and redis.call('HEXISTS', KEYS[2], field) == 1 then
  return {0, 0, '', 0}
end

-- Each scope's windows at (day, month): rolled forward to a newer period; a period older than
-- the stored one (a replica whose clock is behind) counts in the stored, newer window.
local wins = {}
local refused, rwin, remaining = 0, '', -1
for i = 1, n do
  local s, x = KEYS[2 * i], KEYS[2 * i + 1]
  purge(s, x)
  local st = redis.call('HMGET', s, 'd', 'ds', 'dr', 'm', 'ms', 'mr')
  local w = {d = st[1], m = st[4], roll_d = false, roll_m = false}
  local used_d, used_m = num(st[2]) + num(st[3]), num(st[5]) + num(st[6])
  if num(st[1]) < dayn then
    w.d, w.roll_d, used_d = day, true, 0
  end
  if num(st[4]) < monthn then
    w.m, w.roll_m, used_m = month, true, 0
  end
  wins[i] = w
  local limits = {{ARGV[6 + 2 * i - 1], used_d, 'd'}, {ARGV[6 + 2 * i], used_m, 'm'}}
  for _, l in ipairs(limits) do
    if l[1] ~= '' then
      local left = math.max(0, tonumber(l[1]) - l[2])
      if remaining < 0 or left < remaining then
        remaining = left
      end
      if amt > left and refused == 0 then
        refused, rwin = i, l[3]
      end
    end
  end
end
if refused > 0 then
  return {1, refused, rwin, remaining}
end

for i = 1, n do
  local s, x, w = KEYS[2 * i], KEYS[2 * i + 1], wins[i]
  if w.roll_d then
    redis.call('HSET', s, 'd', day, 'ds', '0', 'dr', '0')
  end
  if w.roll_m then
    redis.call('HSET', s, 'm', month, 'ms', '0', 'mr', '0')
  end
  redis.call('HINCRBY', s, 'dr', amount)
  redis.call('HINCRBY', s, 'mr', amount)
  redis.call('HSET', s, field, amount .. ' ' .. w.d .. ' ' .. w.m)
  redis.call('ZADD', x, now + res_ttl, id)
  redis.call('PEXPIRE', s, key_ttl)
  redis.call('PEXPIRE', x, key_ttl)
end
return {0, 0, '', 0}
