-- KEYS: generation keys. Bumps each that exists (a missing generation has no live entry);
-- every entry written under an older generation is a miss from now on, and expires on its TTL.
local n = 0
for _, k in ipairs(KEYS) do
  if redis.call('EXISTS', k) == 1 then
    redis.call('INCR', k)
    n = n + 1
  end
end
return n
