-- One rate-limit decision for one key: requests, tokens and concurrency, atomically, on the
-- server's clock. Every key below shares one hash tag, so the script runs in one cluster slot.
--
-- KEYS[1]  buckets (hash): for the requests ('r') and tokens ('t') buckets, the debt ('rd'/'td',
--          in units of 1/60,000,000: one unit costs 60,000,000), the rate it was charged at
--          ('rp'/'tp', per minute) and when ('rt'/'tt', server time in microseconds)
-- KEYS[2]  slots (sorted set): reservation id -> lease expiry (ms) of every concurrency slot
-- KEYS[3]  records (sorted set): 'q'..id (the request unit may be refunded) and 't'..id (the
--          token reservation may be settled) -> expiry (ms); settle, refund and release consume
--          them, so each takes effect at most once per reservation
--
-- ARGV[1]  'a' admit, 'p' peek (reads only)
-- ARGV[2]  reservation id
-- ARGV[3]  tokens to reserve
-- ARGV[4]  requests per minute (0: not limited)   ARGV[5] request burst
-- ARGV[6]  tokens per minute (0: not limited)     ARGV[7] token burst
-- ARGV[8]  concurrency (0: not limited)
-- ARGV[9]  lease, ms
--
-- Returns {admitted (1/0), kind (1 requests, 2 tokens, 3 concurrency), retry after (us, -1: none),
--          requests remaining, requests reset (us), tokens remaining, tokens reset (us)}.

local U = 60000000
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local now_ms = math.floor(now / 1000)

local mode = ARGV[1]
local id = ARGV[2]
local tokens = tonumber(ARGV[3])
local rpm, rburst = tonumber(ARGV[4]), tonumber(ARGV[5])
local tpm, tburst = tonumber(ARGV[6]), tonumber(ARGV[7])
local conc = tonumber(ARGV[8])
local lease = tonumber(ARGV[9])

local function fmt(x)
  return string.format('%.0f', x)
end

-- Extends the expiry of `key` to at least `ms` from now.
local function extend(key, ms)
  if redis.call('PTTL', key) < ms then
    redis.call('PEXPIRE', key, ms)
  end
end

local f = redis.call('HMGET', KEYS[1], 'rd', 'rp', 'rt', 'td', 'tp', 'tt')

-- The debt of the bucket whose fields start at f[i], now, at a rate of `pm` per minute. A rate
-- change keeps the time until the bucket is full.
local function load(i, pm)
  local d = tonumber(f[i])
  if not d then return 0 end
  local old = tonumber(f[i + 1]) or pm
  local elapsed = now - (tonumber(f[i + 2]) or now)
  if elapsed < 0 then elapsed = 0 end
  d = d - elapsed * old
  if d <= 0 then return 0 end
  if old ~= pm then d = math.ceil(d / old) * pm end
  return d
end

-- Microseconds until `cost` fits (0: now).
local function wait(d, pm, burst, cost)
  local need = d + cost * U
  local cap = burst * U
  if need <= cap then return 0 end
  return math.ceil((need - cap) / pm)
end

local function remaining(d, burst)
  local cap = burst * U
  if d >= cap then return 0 end
  return math.floor((cap - d) / U)
end

local rd, td = 0, 0
if rpm > 0 then rd = load(1, rpm) end
if tpm > 0 then td = load(4, tpm) end

local function reply(admitted, kind, retry)
  local rrem, rres, trem, tres = 0, 0, 0, 0
  if rpm > 0 then rrem, rres = remaining(rd, rburst), math.ceil(rd / rpm) end
  if tpm > 0 then trem, tres = remaining(td, tburst), math.ceil(td / tpm) end
  return {admitted, kind, retry, rrem, rres, trem, tres}
end

if mode == 'p' then
  return reply(1, 0, 0)
end

local busy = false
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
  busy = redis.call('ZCARD', KEYS[2]) >= conc
end
local too_big = tpm > 0 and tokens > tburst
local rw, tw = 0, 0
if rpm > 0 then rw = wait(rd, rpm, rburst, 1) end
if tpm > 0 and not too_big then tw = wait(td, tpm, tburst, tokens) end

if busy or too_big or rw > 0 or tw > 0 then
  local kind = 2
  if busy then kind = 3 elseif rw > 0 then kind = 1 end
  local w = math.max(rw, tw)
  local retry = -1
  if w > 0 and not too_big then retry = w end
  return reply(0, kind, retry)
end

-- Admitted: charge every limited dimension.
local bucket_ms = 0
if rpm > 0 then
  rd = rd + U
  redis.call('HSET', KEYS[1], 'rd', fmt(rd), 'rp', rpm, 'rt', fmt(now))
  bucket_ms = math.max(bucket_ms, math.ceil(rd / rpm / 1000))
end
if tpm > 0 and tokens > 0 then
  td = td + tokens * U
  redis.call('HSET', KEYS[1], 'td', fmt(td), 'tp', tpm, 'tt', fmt(now))
  bucket_ms = math.max(bucket_ms, math.ceil(td / tpm / 1000))
end
if bucket_ms > 0 then
  -- Full buckets are the same as no key at all: the hash lives until both are full again.
  extend(KEYS[1], bucket_ms + 1000)
end

local expiry = now_ms + lease
if conc > 0 then
  redis.call('ZADD', KEYS[2], expiry, id)
  extend(KEYS[2], lease + 1000)
end
if rpm > 0 or tpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
  if rpm > 0 then redis.call('ZADD', KEYS[3], expiry, 'q' .. id) end
  if tpm > 0 then redis.call('ZADD', KEYS[3], expiry, 't' .. id) end
  extend(KEYS[3], lease + 1000)
end
return reply(1, 0, 0)
