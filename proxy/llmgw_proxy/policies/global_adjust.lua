-- Settle or cancel a reservation: take `delta` more from each bucket (negative:
-- give it back) and add `delta` to each budget count, as TokenBucket.adjust does.
-- A budget count whose key is gone (its period ended) is left alone.
--
-- KEYS: nb bucket keys, then nq budget keys.
-- ARGV: nb, nq, then per bucket: rate (per second), delta; then per budget: delta.
-- Returns the budgets' new counts (-1 for a period that ended).
local now = NOW  -- the batch's TIME (global_batch.lua), read once per batch
local nb = tonumber(ARGV[1])
local nq = tonumber(ARGV[2])
for i = 1, nb do
  local rate, delta = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local tat = math.max(tonumber(redis.call('GET', KEYS[i]) or '0'), now) + delta / rate
  local ttl = math.ceil((tat - now) * 1000)
  if ttl > 0 then
    redis.call('SET', KEYS[i], string.format('%.6f', tat), 'PX', ttl + 1000)
  else
    redis.call('DEL', KEYS[i])
  end
end
local out = {}
for j = 1, nq do
  local key = KEYS[nb + j]
  if redis.call('EXISTS', key) == 1 then
    local used = redis.call('INCRBY', key, tonumber(ARGV[2 + 2 * nb + j]))
    if used < 0 then
      redis.call('SET', key, 0, 'KEEPTTL')
      used = 0
    end
    out[j] = used
  else
    out[j] = -1
  end
end
return out
