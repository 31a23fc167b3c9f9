-- What happens to a reservation after its admission, idempotent by reservation id: each
-- operation consumes the reservation's record, so a repeated call (a retry, a replay) changes
-- nothing. Same keys as the admission script (one hash tag).
--
-- KEYS[1]  buckets (hash)   KEYS[2] slots (sorted set)   KEYS[3] records (sorted set)
--
-- ARGV[1]  's' settle the token reservation (refund or charge the difference)
--          'r' refund the request unit
--          'x' release: the admission is over (frees the slot, drops its records)
--          'c' cancel: undo an admission whose reply was lost (refund everything, free the slot)
-- ARGV[2]  reservation id
-- ARGV[3]  requests per minute (0: not limited)
-- ARGV[4]  tokens per minute (0: not limited)
-- ARGV[5]  tokens reserved    ARGV[6] tokens used
--
-- Returns the number of changes applied.

local U = 60000000
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local now_ms = math.floor(now / 1000)

local op = ARGV[1]
local id = ARGV[2]
local rpm = tonumber(ARGV[3])
local tpm = tonumber(ARGV[4])
local reserved = tonumber(ARGV[5])
local actual = tonumber(ARGV[6])

local function fmt(x)
  return string.format('%.0f', x)
end

-- Consumes a record; true when it existed and had not expired.
local function take(member)
  local score = redis.call('ZSCORE', KEYS[3], member)
  if not score then return false end
  redis.call('ZREM', KEYS[3], member)
  return tonumber(score) > now_ms
end

-- Adds `units` (negative: a refund) to bucket `p` ('r' or 't') at a rate of `pm` per minute. A
-- refund never fills the bucket past full.
local function apply(p, pm, units)
  local f = redis.call('HMGET', KEYS[1], p .. 'd', p .. 'p', p .. 't')
  local d = tonumber(f[1]) or 0
  local old = tonumber(f[2]) or pm
  local elapsed = now - (tonumber(f[3]) or now)
  if elapsed < 0 then elapsed = 0 end
  d = d - elapsed * old
  if d < 0 then d = 0 end
  if d > 0 and old ~= pm then d = math.ceil(d / old) * pm end
  d = d + units * U
  if d <= 0 then
    redis.call('HDEL', KEYS[1], p .. 'd', p .. 'p', p .. 't')
    return
  end
  redis.call('HSET', KEYS[1], p .. 'd', fmt(d), p .. 'p', pm, p .. 't', fmt(now))
  local ms = math.ceil(d / pm / 1000) + 1000
  if redis.call('PTTL', KEYS[1]) < ms then
    redis.call('PEXPIRE', KEYS[1], ms)
  end
end

local applied = 0
if op == 's' then
  if tpm > 0 and take('t' .. id) and actual ~= reserved then
    apply('t', tpm, actual - reserved)
    applied = 1
  end
elseif op == 'r' then
  if rpm > 0 and take('q' .. id) then
    apply('r', rpm, -1)
    applied = 1
  end
elseif op == 'x' or op == 'c' then
  if op == 'c' then
    if rpm > 0 and take('q' .. id) then
      apply('r', rpm, -1)
      applied = applied + 1
    end
    if tpm > 0 and take('t' .. id) and reserved > 0 then
      apply('t', tpm, -reserved)
      applied = applied + 1
    end
  end
  applied = applied + redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], 'q' .. id, 't' .. id)
end
return applied
