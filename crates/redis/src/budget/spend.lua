-- KEYS: the scope's hash and its expiry set. ARGV: day, month.
-- Returns {day spent, day reserved, month spent, month reserved} as decimal strings.
local dayn, monthn = tonumber(ARGV[1]), tonumber(ARGV[2])
purge(KEYS[1], KEYS[2])
local st = redis.call('HMGET', KEYS[1], 'd', 'ds', 'dr', 'm', 'ms', 'mr')
local out = {'0', '0', '0', '0'}
if num(st[1]) == dayn then
  out[1], out[2] = st[2] or '0', st[3] or '0'
end
if num(st[4]) == monthn then
  out[3], out[4] = st[5] or '0', st[6] or '0'
end
return out
