"""Purges: by URL hash, tag and path prefix, ``clear``, and the ``on_purge`` hook they (and
the middleware's invalidations) call with a ``PurgeEvent``.

A tag or prefix purge reads the members its index holds, marking them
(``PURGE_MARK_SCRIPT``), deletes their entries, then removes from the index only the members
still marked (``PURGE_SWEEP_SCRIPT``): an entry stored meanwhile keeps its place. Each script
call names the keys of one index, in one slot. This module sends its reads, its UNLINKs and
its two scripts; it bumps the generation and forgets URLs through the shared ``CacheState``.
Of the cache's modules it imports only ``state``.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.crc import key_slot

from .. import entry as entry_codec
from .. import keys
from ..background import BackgroundTasks
from ..stats import CacheStats, RateLimitedWarning
from .state import CacheState, text

logger = logging.getLogger("redis_cache_middleware")

#: Most ``on_purge`` calls for invalidations running at once; past it, events are dropped
#: (with a warning) rather than kept without bound or made to delay responses.
MAX_PENDING_HOOKS = 1000
#: Seconds ``aclose()`` waits for ``on_purge`` calls still running before cancelling them.
HOOK_DRAIN_TIMEOUT = 5.0

#: Most keys one UNLINK command names.
UNLINK_BATCH = 256

#: Most members one PURGE_SWEEP_SCRIPT call checks.
SWEEP_BATCH = 500

_hook_warn = RateLimitedWarning()

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


@dataclass(frozen=True, slots=True)
class PurgeEvent:
    """What a purge did, for the ``on_purge`` hook (e.g. to forward it to a CDN).

    ``kind`` is ``url``, ``tag``, ``prefix``, ``clear``, or ``invalidate`` for the
    middleware's automatic invalidation after an unsafe request (``values``: the absolute
    URLs purged, as ``purge_url`` takes them). ``removed`` is how many entries went; None for
    ``clear``, and for an invalidation whose purge did not reach Redis (the URLs changed all
    the same).
    """

    kind: str
    values: tuple[str, ...]
    removed: int | None


class Purger:
    """Purges a namespace and calls its ``on_purge`` hook: the work behind
    ``RedisCache.purge_url``, ``purge_hashes``, ``purge_tag``, ``purge_prefix``, ``clear``
    and ``notify_soon``."""

    def __init__(
        self,
        state: CacheState,
        stats: CacheStats,
        on_purge: Callable[[PurgeEvent], Any] | None,
    ) -> None:
        self._state = state
        self._stats = stats
        self.on_purge = on_purge
        #: ``on_purge`` calls for the middleware's invalidations, run behind the response.
        self.hook_calls = BackgroundTasks(MAX_PENDING_HOOKS)
        self._mark_script = state.client.register_script(PURGE_MARK_SCRIPT)
        self._sweep_script = state.client.register_script(PURGE_SWEEP_SCRIPT)

    async def purge_url(self, url: str, uhash: str) -> int:
        """Remove every stored variant of ``url``, whose hash is ``uhash``; tell the hook."""
        removed = await self.purge_hashes([uhash])
        await self.purged(PurgeEvent("url", (url,), removed))
        return removed

    async def purge_hashes(self, uhashes: Sequence[str]) -> int:
        """Remove every stored variant of the URLs with these hashes; return how many went."""
        if not uhashes:
            return 0
        state = self._state
        gen = await state.current_generation()
        bases = [keys.url_key(state.namespace, gen, h) for h in uhashes]
        async with state.client.pipeline(transaction=False) as pipe:
            for base in bases:
                pipe.hexists(base, entry_codec.F_STATUS)
                pipe.smembers(keys.variants_key(base))
            replies = await pipe.execute(raise_on_error=False)
        # The keys of one URL share a slot (its hash tag): two UNLINKs per URL, one for the
        # entries (counted) and one for the marker and variant set (not counted).
        groups: list[list[str]] = []
        for i, base in enumerate(bases):
            is_entry, members = replies[2 * i], replies[2 * i + 1]
            entry = is_entry is True or is_entry == 1
            entries = [base] if entry else []
            if isinstance(members, (set, list)):
                # A member that is no variant hash (not ASCII) is none of ours: left out.
                entries += [
                    keys.variant_key(base, m.decode("ascii"))
                    for m in members
                    if isinstance(m, bytes) and m.isascii()
                ]
            groups.append(entries)
            groups.append([keys.variants_key(base)] + ([] if entry else [base]))
        removed = await self._unlink(groups)
        for h in uhashes:
            state.forget(h)
        total = sum(removed[0::2])
        self._stats.purged += total
        return total

    async def _unlink(self, groups: Sequence[Sequence[str]]) -> list[int]:
        """UNLINK groups of keys, each group in one slot; return how many went per group.

        Each group is one multi-key UNLINK (at most ``UNLINK_BATCH`` keys a command), all in
        one non-transactional pipeline, which a cluster client splits by node.
        """
        counts = [0] * len(groups)
        if not any(groups):
            return counts
        owners: list[int] = []
        async with self._state.client.pipeline(transaction=False) as pipe:
            for i, group in enumerate(groups):
                for start in range(0, len(group), UNLINK_BATCH):
                    # execute_command: the cluster pipeline's ``unlink`` refuses several keys.
                    pipe.execute_command("UNLINK", *group[start : start + UNLINK_BATCH])
                    owners.append(i)
            for i, reply in zip(owners, await pipe.execute(), strict=True):
                counts[i] += int(reply)
        return counts

    async def purge_tag(self, tags: Sequence[str]) -> int:
        """Remove every entry that carries any of the tags; return how many went."""
        state = self._state
        gen = await state.current_generation()
        now_ms = int(time.time() * 1000)
        tkeys = [keys.tag_key(state.namespace, gen, t) for t in tags]
        marked = await self._mark([([tkey], [now_ms]) for tkey in tkeys])
        members = sorted(self._own_keys(m for pairs in marked for m, _ in pairs))
        removed = await self._unlink(_by_slot(members))
        if state.near is not None:
            state.near.drop_keys(members)
        # Remove only what was read, and only where nothing was stored since: an entry
        # tagged meanwhile, or the same URL stored again, stays findable.
        await self._sweep([([tkey], pairs) for tkey, pairs in zip(tkeys, marked, strict=True)])
        total = sum(removed)
        self._stats.purged += total
        await self.purged(PurgeEvent("tag", tuple(tags), total))
        return total

    def _own_keys(self, members: Iterable[Any]) -> set[str]:
        """Return the index members that name keys of this namespace: a member that is not
        text, or names a key elsewhere (written by whoever else can write our keys), is
        never deleted; it is swept out of the index like the others."""
        prefix = f"{self._state.namespace}:"
        own: set[str] = set()
        for member in members:
            try:
                key = text(member)
            except UnicodeDecodeError:
                continue
            if key.startswith(prefix):
                own.add(key)
        return own

    async def purge_prefix(
        self,
        path_prefix: str,
        host: str | None,
        hosts: Sequence[bytes] = (),
        any_port: bytes | None = None,
    ) -> int:
        """Remove every entry whose path is under a path-segment prefix; return how many.
        Reads the index kept at store time.

        ``host`` None: of every host. Otherwise (``host`` as given, for the hook) of
        ``hosts`` (as keys hold them), and with ``any_port``, of every host of that name
        in the set of hosts, whatever its port."""
        if not isinstance(path_prefix, str) or not path_prefix.startswith("/"):
            raise ValueError(f"path_prefix must start with '/', got {path_prefix!r}")
        state = self._state
        gen = await state.current_generation()
        now_ms = int(time.time() * 1000)
        targets = list(hosts)
        if host is None or any_port is not None:
            stored = [
                h if isinstance(h, bytes) else str(h).encode()
                for h in await state.client.zrangebyscore(
                    keys.hosts_key(state.namespace, gen), now_ms, "+inf"
                )
            ]
            if host is None:
                targets = stored
            else:
                targets += [h for h in stored if keys.split_port(h)[0] == any_port]
        targets = list(dict.fromkeys(targets))
        bounds = [bound for pair in keys.prefix_ranges(path_prefix) for bound in pair]
        index_keys = [list(keys.prefix_keys(state.namespace, gen, h)) for h in targets]
        marked = await self._mark([(pair, bounds) for pair in index_keys])
        uhashes = sorted({m.rsplit(b"\x00", 1)[-1].decode() for pairs in marked for m, _ in pairs})
        total = await self.purge_hashes(uhashes)
        # As in purge_tag: a URL stored again meanwhile keeps its place in the index.
        await self._sweep(list(zip(index_keys, marked, strict=True)))
        await self.purged(
            PurgeEvent("prefix", (path_prefix if host is None else f"{host}{path_prefix}",), total)
        )
        return total

    async def _mark(
        self, indexes: Sequence[tuple[list[str], list[Any]]]
    ) -> list[list[tuple[bytes, bytes]]]:
        """Read the members a purge removes from each index (its keys, ``PURGE_MARK_SCRIPT``'s
        arguments), marking each one; return ``(member, mark)`` pairs per index."""
        if not indexes:
            return []
        state = self._state
        async with state.client.pipeline(transaction=False) as pipe:
            for index_keys, args in indexes:
                await state.queue_script(pipe, self._mark_script, index_keys, args)
            replies = await pipe.execute()
        return [
            [(bytes(m), bytes(k)) for m, k in zip(r[0::2], r[1::2], strict=True)] for r in replies
        ]

    async def _sweep(self, indexes: Sequence[tuple[list[str], list[tuple[bytes, bytes]]]]) -> None:
        """Remove from each index (its keys) the members ``_mark`` read, those still marked:
        a member stored again since carries a new score, and stays."""
        if not any(pairs for _, pairs in indexes):
            return
        state = self._state
        async with state.client.pipeline(transaction=False) as pipe:
            for index_keys, pairs in indexes:
                for start in range(0, len(pairs), SWEEP_BATCH):
                    args = [item for pair in pairs[start : start + SWEEP_BATCH] for item in pair]
                    await state.queue_script(pipe, self._sweep_script, index_keys, args)
            await pipe.execute()

    async def clear(self) -> None:
        """Forget everything in the namespace at once (a new generation); tell the hook."""
        await self._state.next_generation()
        await self.purged(PurgeEvent("clear", (), None))

    def notify_soon(self, event: PurgeEvent) -> None:
        """Call the ``on_purge`` hook with ``event`` in a task of its own, without waiting for
        it: the middleware's invalidations answer the client while the hook runs. A failing
        hook is logged; ``aclose()`` waits for the calls still running."""
        if self.on_purge is None:
            return
        if not self.hook_calls.spawn(self._notify(event), name="on_purge"):
            _hook_warn(
                "on_purge",
                f"redis-cache dropped an on_purge event ({event.kind} {event.values}): "
                f"{MAX_PENDING_HOOKS} hook calls are still running",
            )

    async def purged(self, event: PurgeEvent) -> None:
        """Log an explicit purge (at debug) and tell the ``on_purge`` hook."""
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "purged (%s): %s",
                " ".join([event.kind, *(repr(v) for v in event.values)]),
                "the namespace" if event.removed is None else f"{event.removed} removed",
            )
        await self._notify(event)

    async def _notify(self, event: PurgeEvent) -> None:
        hook = self.on_purge
        if hook is None:
            return
        try:
            result = hook(event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("on_purge hook failed for %s", event)

    async def drain(self) -> None:
        """Wait for the ``on_purge`` calls still running, at most ``HOOK_DRAIN_TIMEOUT``."""
        await self.hook_calls.drain(HOOK_DRAIN_TIMEOUT)


def _by_slot(names: Sequence[str]) -> list[list[str]]:
    """Group key names by Redis Cluster hash slot (so a multi-key command stays in one)."""
    groups: dict[int, list[str]] = {}
    for name in names:
        groups.setdefault(key_slot(name.encode()), []).append(name)
    return list(groups.values())
