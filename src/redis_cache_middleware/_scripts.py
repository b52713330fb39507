"""The Lua scripts ``RedisCache`` runs: each one atomic on its node, and one command to send.

On a Redis Cluster every call names keys of one hash slot: the keys of one URL share their
hash tag, and each index is written by a call of its own (``INDEX_SCRIPT``); on a single
Redis, ``STORE_SCRIPT`` also writes the indexes, so a miss stores in one command.
``cache.py`` registers them and says when each runs; the layout they write is in
``docs/architecture.md``.
"""

from __future__ import annotations

#: Lua (cluster only, one script per slot): add a stored entry to one index and prune it.
#: KEYS: a tag set (ARGV[1] 't'), a host's path index and its expiry companion ('p'), or the
#: set of hosts ('h'); ARGV: kind, ttl ms, now ms, expiry ms, member, prune batch.
INDEX_SCRIPT = """
local kind, ttl, now, expiry, member = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local function grow(k)
  redis.call('PEXPIRE', k, ttl, 'NX')
  redis.call('PEXPIRE', k, ttl, 'GT')
end
if kind == 't' then
  redis.call('ZADD', KEYS[1], expiry, member)
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
elseif kind == 'p' then
  redis.call('ZADD', KEYS[1], 0, member)
  redis.call('ZADD', KEYS[2], expiry, member)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[6]))
  if #gone > 0 then
    redis.call('ZREM', KEYS[1], unpack(gone))
    redis.call('ZREM', KEYS[2], unpack(gone))
  end
  grow(KEYS[2])
else
  redis.call('ZADD', KEYS[1], 'GT', expiry, member)
  redis.call('ZADD', KEYS[1], 'NX', expiry, member)
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
end
grow(KEYS[1])
return 1
"""

#: Lua: hit-for-pass wins (-1); else take the lock with NX PX (1); else it is held (0).
#: ARGV[2] is the lock's TTL in ms, a fraction of coalesce_timeout (``lock_ttl_for``), so
#: that a dead owner's lock frees up well before its waiters give up; a live owner renews it
#: (RENEW_SCRIPT). Our locks always expire: a lock key without a TTL holds something else,
#: and is dropped (else every miss of the URL would wait coalesce_timeout for a fill that
#: never comes).
ACQUIRE_SCRIPT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('PTTL', KEYS[1]) == -1 then redis.call('DEL', KEYS[1]) end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

#: Lua: delete the lock only if it holds our token; optionally set hit-for-pass for ARGV[2] ms.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[2], '1', 'PX', ARGV[2]) end
return 1
"""

#: Lua: put the lock's TTL back to ARGV[2] ms if it still holds our token (1), else 0: a
#: renewal never extends a lock someone took over after ours expired.
RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

#: Lua: a waiter whose coalesce_timeout ran out takes the fill over, at most once per ARGV[3]
#: ms (coalesce_timeout) across all processes: hit-for-pass wins (-1); else, if no takeover
#: marker (KEYS[2], SET NX PX) says another waiter did in this window, the lock (KEYS[1]) is
#: made ours for ARGV[2] ms whoever held it (1): the slow owner's renewals and store no longer
#: touch it; else 0, and the waiter waits again.
TAKEOVER_SCRIPT = """
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

#: Lua: delete a stored entry (KEYS[1]) only if it is still the one stored at ARGV[2] (field
#: ARGV[1]), so that an entry another process has stored since is kept; 1 if it went.
DROP_SCRIPT = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('UNLINK', KEYS[1])
end
return 0
"""

#: Lua: a hit's read, one command for one or more keys of one URL (one slot): for each key,
#: its PTTL and its HGETALL (flat field, value pairs), or 0 for a key holding another type
#: than a hash. Every key we store has a TTL: a PTTL of -1 says the key is not ours (a miss,
#: which the next store overwrites).
READ_SCRIPT = """
local out = {}
for _, key in ipairs(KEYS) do
  local found = 0
  local kind = redis.call('TYPE', key).ok
  if kind == 'hash' then
    found = redis.call('HGETALL', key)
  elseif kind == 'none' then
    found = {}
  end
  out[#out + 1] = redis.call('PTTL', key)
  out[#out + 1] = found
end
return out
"""

#: Lua: a miss's lookup and fill lock in one round trip. If the URL's hash holds anything (an
#: entry, a Vary marker or garbage): its PTTL and its fields, as READ_SCRIPT answers; else
#: ACQUIRE_SCRIPT's answer for the lock, taken for ARGV[2] ms like there.
LOOKUP_SCRIPT = """
local found = redis.call('HGETALL', KEYS[1])
if #found > 0 then return {redis.call('PTTL', KEYS[1]), found} end
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
if redis.call('PTTL', KEYS[2]) == -1 then redis.call('DEL', KEYS[2]) end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

#: ``store`` on a single Redis, as one script (a cluster spreads the indexes over slots and
#: writes them in a pipeline instead). KEYS: the URL's key, the entry's key (the URL's key
#: again without Vary), the variants set (whose members, when the marker's names change or
#: a plain entry replaces it, are deleted: keys of the URL's slot), the fill lock, the
#: host's two path indexes and the hosts index (the URL's key when unindexed), then one key
#: per tag. ARGV: ttl ms, now ms, expiry ms, mode (STORE_*), variant hash, lock token ('' for
#: none), host ('' for none), path member, prune batch, the number of entry field/value
#: items, those items, then the Vary marker's items (mode 2). Same commands, same order, as
#: the cluster path.
STORE_SCRIPT = """
-- Redis refuses a script's writes for OOM (maxmemory + noeviction) only until its first
-- write: a DEL first would let every later write through. This no-op SETRANGE (an absent
-- key, an empty value: nothing is written) is a deny-oom write, so a full Redis refuses it.
redis.call('SETRANGE', KEYS[1] .. ':oom', 0, '')
local ttl, now, expiry, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local nf = tonumber(ARGV[10])
local function grow(k)
  redis.call('PEXPIRE', k, ttl, 'NX')
  redis.call('PEXPIRE', k, ttl, 'GT')
end
local function put(k, first, last)
  redis.call('DEL', k)
  redis.call('HSET', k, unpack(ARGV, first, last))
  redis.call('PEXPIRE', k, ttl)
end
-- The variants stored under another Vary (or before a response without Vary) must not
-- come back when a later response names those headers again: the newest response wins.
local function drop_variants()
  if redis.call('TYPE', KEYS[3]).ok == 'set' then
    for _, vh in ipairs(redis.call('SMEMBERS', KEYS[3])) do
      redis.call('DEL', KEYS[1] .. ':v:' .. vh)
    end
  end
  redis.call('DEL', KEYS[3])
end
if mode == '0' then
  drop_variants()
  put(KEYS[1], 11, 10 + nf)
else
  if mode == '1' then
    redis.call('PEXPIRE', KEYS[1], ttl, 'GT')
  else
    local vary = ''
    for i = 11 + nf, #ARGV - 1, 2 do
      if ARGV[i] == 'vary' then vary = ARGV[i + 1] end
    end
    if redis.call('TYPE', KEYS[1]).ok ~= 'hash' or redis.call('HGET', KEYS[1], 'vary') ~= vary then
      drop_variants()
    end
    put(KEYS[1], 11 + nf, #ARGV)
  end
  put(KEYS[2], 11, 10 + nf)
  redis.call('SADD', KEYS[3], ARGV[5])
  grow(KEYS[3])
end
if ARGV[6] ~= '' and redis.call('GET', KEYS[4]) == ARGV[6] then
  redis.call('DEL', KEYS[4])
end
for i = 8, #KEYS do
  redis.call('ZADD', KEYS[i], expiry, KEYS[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  grow(KEYS[i])
end
if ARGV[7] ~= '' then
  redis.call('ZADD', KEYS[5], 0, ARGV[8])
  redis.call('ZADD', KEYS[6], expiry, ARGV[8])
  local gone = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now, 'LIMIT', 0, tonumber(ARGV[9]))
  if #gone > 0 then
    redis.call('ZREM', KEYS[5], unpack(gone))
    redis.call('ZREM', KEYS[6], unpack(gone))
  end
  grow(KEYS[5])
  grow(KEYS[6])
  redis.call('ZADD', KEYS[7], 'GT', expiry, ARGV[7])
  redis.call('ZADD', KEYS[7], 'NX', expiry, ARGV[7])
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now)
  grow(KEYS[7])
end
return 1
"""

#: Lua, one index per call (one slot): list the members a purge is about to remove, and mark
#: each by setting its expiry score to a half millisecond (stores always score whole ones).
#: KEYS: a tag set (ARGV: now ms; members that have not expired), or a host's path index
#: and its expiry companion (ARGV: ZRANGEBYLEX bounds, low and high, per range). Returns
#: member, mark, member, mark...; the mark is '' for a path member without an expiry score.
#: Storing the member again, even with the same expiry, replaces the mark with a whole score.
PURGE_MARK_SCRIPT = """
-- A purge must work on a full Redis. ZADD is refused for OOM until the script has written,
-- and removing a member no index holds is a write that is never refused.
local scored = KEYS[#KEYS]
redis.call('ZREM', scored, '')
local found = {}
if #KEYS == 1 then
  found = redis.call('ZRANGEBYSCORE', scored, ARGV[1], '+inf', 'WITHSCORES')
else
  for i = 1, #ARGV, 2 do
    for _, member in ipairs(redis.call('ZRANGEBYLEX', KEYS[1], ARGV[i], ARGV[i + 1])) do
      found[#found + 1] = member
      found[#found + 1] = redis.call('ZSCORE', scored, member)
    end
  end
end
local out = {}
for i = 1, #found, 2 do
  local mark = ''
  if found[i + 1] then
    mark = string.format('%.1f', math.floor(tonumber(found[i + 1])) + 0.5)
    redis.call('ZADD', scored, 'XX', mark, found[i])
  end
  out[#out + 1] = found[i]
  out[#out + 1] = mark
end
return out
"""

#: Lua, one index per call (the keys PURGE_MARK_SCRIPT took): remove each member whose
#: score is still the mark it was given (ARGV: member, mark, member, mark...).
PURGE_SWEEP_SCRIPT = """
local scored = KEYS[#KEYS]
for i = 1, #ARGV, 2 do
  local member, mark = ARGV[i], ARGV[i + 1]
  local score = redis.call('ZSCORE', scored, member)
  if (score and tonumber(score) == tonumber(mark)) or (not score and mark == '') then
    for _, key in ipairs(KEYS) do
      redis.call('ZREM', key, member)
    end
  end
end
return 1
"""
