-- Run the reserves and adjusts that one sidecar asked for at about the same
-- time as ONE script call: one command to write and one reply to read, however
-- many there are. `reserve` and `adjust` are global_reserve.lua and
-- global_adjust.lua, each wrapped as a function of its own KEYS and ARGV by
-- global_limits.batch_script(); each call does exactly what that script does
-- alone (the whole batch is atomic, which each call was already).
--
-- KEYS: each call's keys, in order.
-- ARGV: n, then per call: kind ('r' reserve, 'a' adjust), its number of keys,
--       its number of arguments; then each call's arguments, in order.
-- Returns one reply per call, in order: what the script alone returns.
-- Redis's TIME is read once for the whole batch: the calls run atomically, at one instant.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = tonumber(ARGV[1])
local out = {}
local k, a = 1, 2 + 3 * n
for i = 1, n do
  local h = 2 + 3 * (i - 1)
  local nk, na = tonumber(ARGV[h + 1]), tonumber(ARGV[h + 2])
  local keys, args = {}, {}
  for j = 1, nk do
    keys[j] = KEYS[k + j - 1]
  end
  for j = 1, na do
    args[j] = ARGV[a + j - 1]
  end
  k, a = k + nk, a + na
  if ARGV[h] == 'r' then
    out[i] = reserve(keys, args, now)
  else
    out[i] = adjust(keys, args, now)
  end
end
return out
