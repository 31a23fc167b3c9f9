-- KEYS: the namespace's generation, the entry. ARGV: the value (its first 20 bytes are
-- overwritten with the generation), the entry's TTL in ms.
-- The generation key is created with the first entry and always outlives every entry of its
-- namespace, so that a purge (which only bumps an existing generation) reaches them all.
local ttl = tonumber(ARGV[2])
local g = redis.call('GET', KEYS[1])
if g then
  if redis.call('PTTL', KEYS[1]) < ttl then
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
else
  g = '0'
  redis.call('SET', KEYS[1], g, 'PX', ttl)
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ttl)
redis.call('SETRANGE', KEYS[2], 0, string.format('%020d', tonumber(g)))
return 1
