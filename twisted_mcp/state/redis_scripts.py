"""
The Lua scripts the Redis state runs, each one atomic on the server.

Every script reads the time from Redis (C{TIME}), never from the replica
calling it: replicas' clocks may differ, Redis's is one.  Numbers go back
to Python as strings (Lua truncates a number reply to an integer).
"""

from __future__ import annotations

import hashlib

import attrs

#: All or nothing: one token from each bucket, or none.
#: KEYS: the buckets.  ARGV: rate, burst (per key), then the margin in ms for PEXPIRE.
#: A bucket is a hash {tokens, ts (ms, Redis time)}; absent: full.
#: Returns a status reply (one line: cheaper to parse than bulk strings): "0" when taken, else
#: "<wait in seconds, as text ("inf": never)> <1-based index of the worst bucket>".
TAKE = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #KEYS
local margin = tonumber(ARGV[2 * n + 1])
local levels = {}
local worst, worst_wait = 0, -1
for i = 1, n do
  local rate = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local v = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tokens, ts = tonumber(v[1]), tonumber(v[2])
  if tokens == nil or ts == nil then
    tokens, ts = burst, now
  end
  if now > ts then
    tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
  end
  levels[i] = tokens
  if tokens < 1 then
    local wait
    if rate > 0 then wait = (1 - tokens) / rate else wait = math.huge end
    if wait > worst_wait then
      worst, worst_wait = i, wait
    end
  end
end
if worst > 0 then
  if worst_wait == math.huge then return {ok = 'inf ' .. worst} end
  return {ok = string.format('%.6f', worst_wait) .. ' ' .. worst}
end
for i = 1, n do
  local rate = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tokens = levels[i] - 1
  redis.call('HSET', KEYS[i], 'tokens', string.format('%.6f', tokens), 'ts', tostring(now))
  if rate > 0 then
    redis.call('PEXPIRE', KEYS[i], math.ceil((burst - tokens) / rate * 1000) + margin)
  else
    redis.call('PEXPIRE', KEYS[i], 86400000)
  end
end
return {ok = '0'}
"""

#: Give one token back to each bucket, capped at its burst (a call refused after the take).
#: KEYS: the buckets.  ARGV: rate, burst (per key), then the margin in ms.
GIVE_BACK = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #KEYS
local margin = tonumber(ARGV[2 * n + 1])
for i = 1, n do
  local rate = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local v = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tokens, ts = tonumber(v[1]), tonumber(v[2])
  if tokens ~= nil and ts ~= nil then
    if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate / 1000) end
    tokens = math.min(burst, tokens + 1)
    redis.call('HSET', KEYS[i], 'tokens', string.format('%.6f', tokens), 'ts', tostring(now))
    if rate > 0 then
      redis.call('PEXPIRE', KEYS[i], math.ceil((burst - tokens) / rate * 1000) + margin)
    end
  end
end
return 'OK'
"""

#: A lease on one of ARGV[2] slots of KEYS[1] (a sorted set, member -> expiry in ms, Redis time).
#: ARGV: member, limit, lease milliseconds.  Returns 1 (added) or 0 (all held).
ACQUIRE = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + ms, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ms * 2)
return 1
"""

#: Renew this replica's leases: KEYS[i] holds member ARGV[i + 1]; ARGV[1]: lease milliseconds.
#: Returns how many were still there (a lease dropped as expired is not re-added).
RENEW = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[1])
local kept = 0
for i = 1, #KEYS do
  local score = tonumber(redis.call('ZSCORE', KEYS[i], ARGV[i + 1]))
  if score and score > now then
    redis.call('ZADD', KEYS[i], now + ms, ARGV[i + 1])
    redis.call('PEXPIRE', KEYS[i], ms * 2)
    kept = kept + 1
  end
end
return kept
"""

#: Set (ARGV[5] given) or remove (absent) flag ARGV[4] of the hash KEYS[1], and publish
#: ARGV[2] on channel ARGV[1]: the change and its news in one atomic step.  A new name
#: is refused when the hash already holds ARGV[3] names.  Returns 1 (done) or 0 (full).
SET_FLAG = """
if #ARGV >= 5 then
  if redis.call('HEXISTS', KEYS[1], ARGV[4]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
    return 0
  end
  redis.call('HSET', KEYS[1], ARGV[4], ARGV[5])
else
  redis.call('HDEL', KEYS[1], ARGV[4])
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""

#: Delete KEYS[1] and publish ARGV[2] on channel ARGV[1], atomically.  Returns 1.
DELETE_AND_PUBLISH = """
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""

#: Remove the flags ARGV[2..] of the hash KEYS[1] whose value (a number) is at most ARGV[1]:
#: checked here, so that a flag set again meanwhile with a later value stays.  Returns how many.
PRUNE_EXPIRED = """
local now = tonumber(ARGV[1])
local removed = 0
for i = 2, #ARGV do
  local v = tonumber(redis.call('HGET', KEYS[1], ARGV[i]))
  if v and v <= now then
    redis.call('HDEL', KEYS[1], ARGV[i])
    removed = removed + 1
  end
end
return removed
"""


@attrs.frozen
class Script:
    """One Lua script and its SHA-1 (what C{EVALSHA} names it by)."""

    name: str
    source: str
    sha: str = attrs.field(init=False)

    @sha.default
    def _sha(self) -> str:
        return hashlib.sha1(self.source.encode("utf-8")).hexdigest()


SCRIPTS = {
    "take": Script("take", TAKE),
    "give_back": Script("give_back", GIVE_BACK),
    "acquire": Script("acquire", ACQUIRE),
    "renew": Script("renew", RENEW),
    "set_flag": Script("set_flag", SET_FLAG),
    "delete_and_publish": Script("delete_and_publish", DELETE_AND_PUBLISH),
    "prune_expired": Script("prune_expired", PRUNE_EXPIRED),
}

__all__ = ["SCRIPTS", "Script"]
