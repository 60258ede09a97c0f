-- Reserve one request and its token estimate in every global bucket, or in none,
-- and the estimate in every budget period: the in-memory limiter's GCRA
-- (policies/buckets.py), run atomically in Redis with Redis's own clock, so
-- every sidecar sees one set of buckets. One round trip per admission.
--
-- KEYS: nb bucket keys, then nq budget keys.
-- ARGV: nb, nq, then per bucket: rate (per second), burst, amount, max wait (s);
--       then per budget: limit, amount, ttl (s).
-- A bucket key holds its theoretical arrival time (seconds, Redis clock); a
-- missing key is a full bucket. It expires once the bucket would be full again.
-- Returns {0, wait_us, used...}       granted: start in wait_us, budgets' new counts
--         {1, bucket, retry_after_us} a bucket needs longer than its max wait
--         {2, bucket}                 the amount is larger than the bucket's burst
--         {3, budget, used}           the budget cannot hold the amount
local now = NOW  -- the batch's TIME (global_batch.lua), read once per batch
local nb = tonumber(ARGV[1])
local nq = tonumber(ARGV[2])
local qbase = 3 + 4 * nb

for j = 1, nq do
  local o = qbase + 3 * (j - 1)
  local used = tonumber(redis.call('GET', KEYS[nb + j]) or '0')
  if used + tonumber(ARGV[o + 1]) > tonumber(ARGV[o]) then
    return {3, j, used}
  end
end

local tats = {}
local start = now
local too_long = 0
for i = 1, nb do
  local o = 3 + 4 * (i - 1)
  local rate, burst, amount, max_wait =
    tonumber(ARGV[o]), tonumber(ARGV[o + 1]), tonumber(ARGV[o + 2]), tonumber(ARGV[o + 3])
  if amount > burst then
    return {2, i}
  end
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  tats[i] = tat
  local earliest = math.max(now, tat - (burst - amount) / rate)
  if too_long == 0 and earliest - now > max_wait then
    too_long = i
  end
  if earliest > start then
    start = earliest
  end
end
if too_long > 0 then
  return {1, too_long, math.ceil((start - now) * 1000000)}
end

for i = 1, nb do
  local o = 3 + 4 * (i - 1)
  local tat = math.max(tats[i], start) + tonumber(ARGV[o + 2]) / tonumber(ARGV[o])
  redis.call('SET', KEYS[i], string.format('%.6f', tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
end
local out = {0, math.ceil((start - now) * 1000000)}
for j = 1, nq do
  local o = qbase + 3 * (j - 1)
  out[#out + 1] = redis.call('INCRBY', KEYS[nb + j], tonumber(ARGV[o + 1]))
  redis.call('EXPIRE', KEYS[nb + j], tonumber(ARGV[o + 2]))
end
return out
