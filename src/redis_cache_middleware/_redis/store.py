"""Writing entries: ``RedisCache.store`` (on a single Redis and on a cluster), the tag and
path indexes it keeps for purges, and ``drop_entry``'s removal of a superseded entry.

Each script is atomic on its node and one command to send. On a Redis Cluster every call
names keys of one hash slot: the keys of one URL share their hash tag, and each index is
written by a call of its own (``INDEX_SCRIPT``); on a single Redis, ``STORE_SCRIPT`` also
writes the indexes, so a miss stores in one command. The layout they write is in
``docs/architecture.md``. This module sends its three scripts; it updates what the shared
``CacheState`` remembers of URLs. Of the cache's modules it imports ``state``, and
``fill_locks`` for the lock's type.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import entry as entry_codec
from .. import keys
from ..entry import CachedEntry, VaryMarker
from .state import CacheState, text

if TYPE_CHECKING:
    from .fill_locks import FillLock

PRUNE_BATCH = 100

STORE_PLAIN, STORE_VARY_KEEP_MARKER, STORE_VARY_NEW_MARKER = 0, 1, 2

#: Lua (cluster only, one script per slot): add a stored entry to one index and prune it.
#: KEYS: a tag set (ARGV[1] 't'), a host's path index and its expiry companion ('p'), or the
#: set of hosts ('h'); ARGV: kind, ttl ms, now ms, expiry ms, member, prune batch.
INDEX_SCRIPT = """
local kind, ttl, now, expiry, member = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
-- A key's TTL goes up to ttl, never down; one without a TTL (GT sees it as infinite) gets it.
local function grow(k)
  if redis.call('PEXPIRE', k, ttl, 'GT') == 0 then redis.call('PEXPIRE', k, ttl, 'NX') end
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
  -- GT adds a new member too; an existing one's expiry only goes up.
  redis.call('ZADD', KEYS[1], 'GT', expiry, member)
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
end
grow(KEYS[1])
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
-- A key's TTL goes up to ttl, never down; one without a TTL (GT sees it as infinite) gets it.
local function grow(k)
  if redis.call('PEXPIRE', k, ttl, 'GT') == 0 then redis.call('PEXPIRE', k, ttl, 'NX') end
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
  -- GT adds a new member too; an existing one's expiry only goes up.
  redis.call('ZADD', KEYS[7], 'GT', expiry, ARGV[7])
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now)
  grow(KEYS[7])
end
return 1
"""


class Writer:
    """Writes a namespace's entries: ``RedisCache.store`` and ``RedisCache.drop_entry``."""

    def __init__(self, state: CacheState) -> None:
        self._state = state
        self._store_script = state.client.register_script(STORE_SCRIPT)
        self._index_script = state.client.register_script(INDEX_SCRIPT)
        self._drop_script = state.client.register_script(DROP_SCRIPT)

    async def store(
        self,
        uhash: str,
        entry: CachedEntry,
        *,
        ttl: float,
        names: tuple[str, ...],
        values: list[bytes | None] | None,
        generation: int | None,
        found_names: tuple[str, ...] | None,
        host: bytes | None,
        path: str | None,
        fill: FillLock | None,
    ) -> None:
        """Store an entry for a URL (or for one variant of it), never half-written.

        ``names`` and ``values`` are the varying request headers and this request's values of
        them; with no names the entry sits at the URL's key. ``found_names`` are the Vary names
        the lookup found at the URL's key, so that an unchanged marker is only extended.
        ``ttl`` is in seconds, freshness plus the stale window. ``host`` and ``path`` index
        the entry for ``purge_prefix``; the entry's tags index it for ``purge_tag``.
        ``fill`` is the fill lock this request holds, released in the same transaction.

        On a single Redis one script writes the URL's keys, the indexes and the lock release
        atomically; on a cluster the script writes the URL's keys (one slot) and releases
        the lock, and the indexes (other slots) follow in a pipeline split by node.
        """
        state = self._state
        ttl_ms = max(1, int(ttl * 1000))
        now_ms = int(time.time() * 1000)
        expiry_ms = now_ms + ttl_ms
        gen = state.generation if generation is None else generation
        base = keys.url_key(state.namespace, gen, uhash)
        fields = entry_codec.encode(entry)
        # On a single Redis one script writes the entry, its indexes and the lock release.
        # On a cluster the same script writes only the URL's keys (one slot, its hash tag)
        # and the lock release; the indexes (other slots) follow in a pipeline the client
        # splits by node. redis-py's transactional cluster pipeline is not used: it queues
        # each command through a thread of its own.
        cluster = state.cluster
        await self._store_single(
            base,
            uhash,
            fields,
            ttl_ms,
            now_ms,
            expiry_ms,
            names,
            values,
            found_names,
            () if cluster else entry.tags,
            None if cluster else host,
            None if cluster else path,
            fill,
            gen,
        )
        if cluster and (entry.tags or (host is not None and path is not None)):
            entry_key = (
                keys.variant_key(base, keys.variant_hash(names, values or [None] * len(names)))
                if names
                else base
            )
            async with state.client.pipeline(transaction=False) as index_pipe:
                await self._index(
                    index_pipe,
                    gen,
                    entry_key,
                    entry.tags,
                    host,
                    path,
                    uhash,
                    now_ms,
                    expiry_ms,
                    ttl_ms,
                )
                await index_pipe.execute()
        state.drop_near(uhash)
        state.remember_vary(uhash, names or None)
        if not names:
            state.remember_stored(uhash, ttl)

    async def _store_single(
        self,
        base: str,
        uhash: str,
        fields: dict[bytes, bytes],
        ttl_ms: int,
        now_ms: int,
        expiry_ms: int,
        names: tuple[str, ...],
        values: list[bytes | None] | None,
        found_names: tuple[str, ...] | None,
        tags: Sequence[str],
        host: bytes | None,
        path: str | None,
        fill: FillLock | None,
        gen: int,
    ) -> None:
        """``store`` on a single Redis: one script writes the entry, its indexes and the
        lock release atomically, so a miss costs one command to send and one round trip."""
        namespace = self._state.namespace
        variants = keys.variants_key(base)
        if not names:
            entry_key = base
            mode = STORE_PLAIN
            marker: list[bytes] = []
            vhash = ""
        else:
            vhash = keys.variant_hash(names, values or [None] * len(names))
            entry_key = keys.variant_key(base, vhash)
            if found_names == names:
                mode, marker = STORE_VARY_KEEP_MARKER, []
            else:
                mode = STORE_VARY_NEW_MARKER
                marker = _flat(entry_codec.encode_marker(VaryMarker(names)))
        lock = keys.lock_key(base, fill.variant) if fill is not None else base
        if host is not None and path is not None:
            lex, exp = keys.prefix_keys(namespace, gen, host)
            hosts = keys.hosts_key(namespace, gen)
            host_arg = host
            member = keys.path_member(path, uhash)
        else:
            lex = exp = hosts = base
            host_arg = member = b""
        flat = _flat(fields)
        await self._state.run_script(
            self._store_script,
            [
                base,
                entry_key,
                variants,
                lock,
                lex,
                exp,
                hosts,
                *(keys.tag_key(namespace, gen, tag) for tag in tags),
            ],
            [
                ttl_ms,
                now_ms,
                expiry_ms,
                mode,
                vhash,
                "" if fill is None else fill.token,
                host_arg,
                member,
                PRUNE_BATCH,
                len(flat),
                *flat,
                *marker,
            ],
        )

    async def _index(
        self,
        pipe: Any,
        gen: int,
        entry_key: str,
        tags: Sequence[str],
        host: bytes | None,
        path: str | None,
        uhash: str,
        now_ms: int,
        expiry_ms: int,
        ttl_ms: int,
    ) -> None:
        """Queue the index updates for a stored entry (on a cluster, where they cannot join
        the entry's script): one script per index key's slot, for each tag set, the host's
        path index (both its keys share a slot) and the set of hosts."""
        state = self._state
        indexed = text(entry_key)
        for tag in tags:
            tkey = keys.tag_key(state.namespace, gen, tag)
            await state.queue_script(
                pipe, self._index_script, [tkey], ["t", ttl_ms, now_ms, expiry_ms, indexed, 0]
            )
        if host is None or path is None:
            return
        lex, exp = keys.prefix_keys(state.namespace, gen, host)
        member = keys.path_member(path, uhash)
        await state.queue_script(
            pipe,
            self._index_script,
            [lex, exp],
            ["p", ttl_ms, now_ms, expiry_ms, member, PRUNE_BATCH],
        )
        hkey = keys.hosts_key(state.namespace, gen)
        await state.queue_script(
            pipe, self._index_script, [hkey], ["h", ttl_ms, now_ms, expiry_ms, host, 0]
        )

    async def drop(self, uhash: str, key: str, stored_at: float) -> bool:
        """Delete the entry at ``key`` (a URL's key, or one of its variants' keys) if it is
        still the one stored at ``stored_at``; return whether it went.

        For an entry the app's newer answer has superseded: an entry stored since by another
        request is kept. Tag and path index members of the entry are left to expire; a purge
        that reaches them finds nothing to remove.
        """
        result = await self._state.run_script(
            self._drop_script,
            [key],
            [entry_codec.F_STORED_AT, entry_codec.encode_number(stored_at)],
        )
        dropped = int(result) == 1
        self._state.drop_near(uhash)
        if dropped:
            # A hint only: the next lookup may try the lock.
            self._state.stored_until.pop(uhash, None)
        return dropped


def _flat(mapping: dict[bytes, bytes]) -> list[bytes]:
    """A mapping as the flat field, value, field, value list HSET takes."""
    return [item for pair in mapping.items() for item in pair]
