"""Reading entries: ``RedisCache.lookup`` (with the variant of it that takes the URL's fill
lock in the same round trip), ``Lookup``, and the decoding of what Redis answers.

The hit path: a lookup is one command, and on most hits a plain HGETALL. It sends the reads
and its two scripts; it reads and updates the shared ``CacheState`` (the generation, what
this process remembers of URLs). With the near cache on, a lookup first asks it (no command
at all), and keeps what it then reads from Redis in it, with the deadline of the PTTL read
along (``near``). Of the cache's modules it imports ``state``, ``near``, and ``fill_locks``
for the lock's type.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError, ResponseError

from .. import entry as entry_codec
from .. import keys
from ..entry import CachedEntry, VaryMarker
from .near import SAFETY, NearCache
from .state import CacheState, parse_generation

if TYPE_CHECKING:
    from .fill_locks import FillLock

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


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a lookup found for a request.

    ``state`` is ``"hit"`` (``entry`` set), ``"uri-miss"`` (nothing stored for the URL),
    ``"vary-miss"`` (the URL varies and this request's variant is not stored) or ``"corrupt"``
    (something that is not ours is at the key: unreadable, or a hash without a TTL, which
    our stores always set; the next store overwrites it).
    """

    state: str
    generation: int
    entry: CachedEntry | None = None
    #: The Vary names found at the URL's key, when it holds a marker.
    names: tuple[str, ...] | None = None
    #: The key the entry was read from (the URL's key or a variant's).
    key: str | None = None
    #: When the lookup was asked to take the URL's fill lock on a miss, and did in the
    #: same round trip: ``ACQUIRED``, ``HELD`` or ``PASS``; else None.
    lock: int | None = None
    #: Whether the near cache answered (no Redis command was sent).
    near: bool = False


class Reader:
    """Reads a namespace's entries: ``RedisCache.lookup``."""

    def __init__(self, state: CacheState) -> None:
        self._state = state
        self._client = state.client
        self._lookup_script = state.client.register_script(LOOKUP_SCRIPT)
        self._read_script = state.client.register_script(READ_SCRIPT)

    def near_hit(
        self, uhash: str, values_for: Callable[[tuple[str, ...]], list[bytes | None]]
    ) -> Lookup | None:
        """Return the hit the near cache holds for a URL (or for this request's variant of
        it), with no Redis command and no await; None when it holds none, or is not in use."""
        state = self._state
        near = state.near
        if near is None:
            return None
        now = time.monotonic()
        if not near.usable(now):
            return None
        generation = state.generation
        base = keys.url_key(state.namespace, generation, uhash)
        held = _near_lookup(near, base, now, values_for, generation)
        if held is not None:
            near.stats.near_hit += 1
        return held

    async def lookup(
        self,
        uhash: str,
        values_for: Callable[[tuple[str, ...]], list[bytes | None]],
        guess: tuple[str, ...] | None,
        fill: FillLock | None,
        fill_ttl: float,
    ) -> Lookup:
        """Return what is stored for a URL and, when it varies, for this request's variant.

        ``values_for(names)`` returns the request's values of those headers (None if absent).
        ``guess`` names the Vary headers expected, so that the variant can be fetched in the
        same round trip as the URL's key; a wrong guess costs a second round trip.

        With ``fill`` (a lock for the URL itself, variant ``""``), a lookup that finds the
        URL's key empty also tries that fill lock, in the same round trip, for ``fill_ttl``
        seconds; ``Lookup.lock`` says how that went (None when it was not tried).
        """
        state = self._state
        generation = state.generation
        base = keys.url_key(state.namespace, generation, uhash)
        near = state.near
        #: The near cache's serial before the reads were sent (None: nothing is kept).
        since: int | None = None
        began = 0.0
        if near is not None:
            began = time.monotonic()
            if near.usable(began):
                held = _near_lookup(near, base, began, values_for, generation)
                if held is not None:
                    near.stats.near_hit += 1
                    return held
                near.stats.near_miss += 1
                since = near.serial
            elif state.tracker is not None:
                state.tracker.wake()
        if guess is None:
            guess = state.vary_names.get(uhash)
        guessed_key: str | None = None
        check = time.monotonic() - state.generation_checked_at >= state.generation_interval
        #: The PTTL a script read with the URL's key (None: a plain HGETALL read it).
        known_ttl: Any = None
        #: READ_SCRIPT's whole reply, when it read the guessed variant too.
        read_reply: Any = None
        if not guess and not check:
            if since is None and state.stored_until.get(uhash, 0.0) >= time.monotonic():
                # The common hit: one plain HGETALL. This process knows the key has a TTL
                # until then (its own store set it, or a script read it): a key without one
                # (not ours) is caught by the next script read, once that deadline passes.
                replies = [None, await self._hgetall(base)]
            elif fill is not None:
                # Likely a miss: the same round trip also tries the fill lock.
                reply = await self._lookup_or_lock(base, fill, fill_ttl)
                if isinstance(reply, int):
                    state.remember_vary(uhash, None)
                    return Lookup(state="uri-miss", generation=generation, lock=reply)
                known_ttl = _first_pttl(reply)
                replies = [None, *_hash_replies(reply, 1)]
            else:
                reply = await self._read_reply([base])
                known_ttl = _first_pttl(reply)
                replies = [None, *_hash_replies(reply, 1)]
        else:
            while True:
                if guess:
                    guessed_key = keys.variant_key(
                        base, keys.variant_hash(guess, values_for(guess))
                    )
                read_keys = [base] if guessed_key is None else [base, guessed_key]
                if not check:
                    # The URL's key and the guessed variant's: one command.
                    read_reply = await self._read_reply(read_keys)
                    known_ttl = _first_pttl(read_reply)
                    replies = [None, *_hash_replies(read_reply, len(read_keys))]
                    break
                gen_reply, read_reply = await self._generation_and_read(read_keys)
                for reply in (gen_reply, read_reply):
                    if isinstance(reply, Exception) and not isinstance(reply, ResponseError):
                        raise reply  # no answer (a lost connection, refused credentials)
                if isinstance(gen_reply, ResponseError):
                    _garbage_or_raise(gen_reply)
                if isinstance(read_reply, ResponseError):
                    raise read_reply
                known_ttl = _first_pttl(read_reply)
                replies = [gen_reply, *_hash_replies(read_reply, len(read_keys))]
                state.generation_checked_at = time.monotonic()
                current = parse_generation(gen_reply)
                if current == generation:
                    break
                # The namespace was cleared: look again under the new generation.
                state.generation = generation = current
                base = keys.url_key(state.namespace, generation, uhash)
                check = False
        found = decode_reply(replies[1])
        if since is not None and found is not None and isinstance(known_ttl, int):
            assert near is not None
            if known_ttl > 0:
                near.keep(base, uhash, found, began + known_ttl / 1000 - SAFETY, since)
        if found is None:
            state.stored_until.pop(uhash, None)
            status = "uri-miss" if _is_empty(replies[1]) else "corrupt"
            if status == "uri-miss":
                state.remember_vary(uhash, None)
            return Lookup(state=status, generation=generation)
        if isinstance(found, CachedEntry):
            state.remember_vary(uhash, None)
            if isinstance(known_ttl, int) and known_ttl > 0:
                # Only a TTL Redis reported extends the plain-read window, never the entry's
                # own claim of freshness (which whoever wrote the key chose).
                state.remember_stored(uhash, known_ttl / 1000)
            return Lookup(state="hit", generation=generation, entry=found, key=base)
        names = found.names
        state.remember_vary(uhash, names)
        vkey = keys.variant_key(base, keys.variant_hash(names, values_for(names)))
        if guessed_key is not None and guess == names:
            variant_reply = replies[2]
            variant_ttl = read_reply[2] if isinstance(read_reply, list) else None
        else:
            if since is not None:
                began = time.monotonic()
            variant_read = await self._read_reply([vkey])
            variant_ttl = _first_pttl(variant_read)
            (variant_reply,) = _hash_replies(variant_read, 1)
        variant = decode_reply(variant_reply)
        if since is not None and isinstance(variant, CachedEntry) and isinstance(variant_ttl, int):
            assert near is not None
            if variant_ttl > 0:
                near.keep(vkey, uhash, variant, began + variant_ttl / 1000 - SAFETY, since)
        if isinstance(variant, CachedEntry):
            return Lookup(state="hit", generation=generation, entry=variant, names=names, key=vkey)
        status = "vary-miss" if _is_empty(variant_reply) else "corrupt"
        return Lookup(state=status, generation=generation, names=names)

    async def _generation_and_read(self, read_keys: list[str]) -> list[Any]:
        """The namespace generation and READ_SCRIPT's reply for the keys, in one round trip
        (an error as the exception, not raised). EVAL, not EVALSHA: a pipeline cannot load
        a missing script (and a cluster's refuses EVALSHA). Once per
        generation_check_interval."""
        state = self._state
        count = len(read_keys)
        lane = state.lane
        if lane is not None:
            return await lane.pipeline(
                (b"GET", state.generation_key), (b"EVAL", READ_SCRIPT, count, *read_keys)
            )
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.get(state.generation_key)
            pipe.eval(READ_SCRIPT, count, *read_keys)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def _lookup_or_lock(self, base: str, fill: FillLock, ttl: float) -> Any:
        """PTTL and HGETALL of a URL's key (as READ_SCRIPT answers, for ``_hash_replies``);
        when it is empty, try its fill lock (an int) instead. Likely a miss, whose request
        and app wait for it: written at once (``urgent``), not with the loop's next batch."""
        try:
            return await self._state.run_script(
                self._lookup_script,
                [base, keys.lock_key(base, fill.variant), keys.pass_key(base)],
                [fill.token, max(1, int(ttl * 1000))],
                urgent=True,
            )
        except ResponseError as exc:  # WRONGTYPE inside the script: garbage at our key
            return _garbage_or_raise(exc)

    async def _hgetall(self, key: str) -> Any:
        """Return HGETALL of a key, or the error when the key holds another type."""
        try:
            return await self._state.hgetall(key)
        except ResponseError as exc:  # WRONGTYPE: garbage at our key, a miss
            return _garbage_or_raise(exc)

    async def _read_reply(self, read_keys: list[str]) -> Any:
        """Return READ_SCRIPT's reply for the keys (PTTL, fields, per key): one command."""
        script = self._read_script
        if self._state.lane is not None:
            return await self._state.run_script(script, read_keys, [])
        try:
            # EVALSHA itself: calling the script object costs a hit ~4% more CPU (it runs an
            # import statement on every call); it is there to load the script when missing.
            reply = await self._client.evalsha(script.sha, len(read_keys), *read_keys)
        except NoScriptError:
            return await script(keys=read_keys)
        return reply


def _garbage_or_raise(error: ResponseError) -> ResponseError:
    """Return a WRONGTYPE error (garbage at our key: a miss); raise any other (NOPERM, OOM,
    LOADING...): Redis refused the read, which is not the same as finding nothing."""
    if "WRONGTYPE" in str(error):
        return error
    raise error


def _is_empty(reply: Any) -> bool:
    return isinstance(reply, (dict, list)) and not reply


class _NotOurs:
    """What ``_hash_replies`` gives for a key we did not write: it holds another type than a hash,
    or it is a hash without a TTL (our stores always set one). Decodes as nothing, and is
    not empty: a lookup reads it as "corrupt", and the next store overwrites it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_OURS"


NOT_OURS = _NotOurs()


def _first_pttl(reply: Any) -> Any:
    """Return the PTTL a READ_SCRIPT or LOOKUP_SCRIPT reply gives for its first key."""
    return reply[0] if isinstance(reply, list) and reply else None


def _hash_replies(reply: Any, count: int) -> list[Any]:
    """READ_SCRIPT's reply (PTTL, fields, per key) as one HGETALL reply per key, with
    ``NOT_OURS`` for a key holding another type or a hash without a TTL.

    Also takes LOOKUP_SCRIPT's reply for a found key, and the WRONGTYPE error it raises for
    a key holding another type (``_garbage_or_raise``)."""
    if not isinstance(reply, list) or len(reply) != 2 * count:
        return [NOT_OURS] * count
    out: list[Any] = []
    for pttl, found in zip(reply[0::2], reply[1::2], strict=True):
        if isinstance(found, list) and (not found or pttl != -1):
            out.append(found)
        else:
            out.append(NOT_OURS)
    return out


def decode_reply(reply: Any) -> CachedEntry | VaryMarker | None:
    """Decode an HGETALL reply: an entry, a Vary marker, or None (nothing, or not ours)."""
    if isinstance(reply, dict) and reply:
        return entry_codec.decode(reply)
    if isinstance(reply, list) and reply:  # RESP2 parsers without the callback: flat pairs
        return entry_codec.decode(dict(zip(reply[::2], reply[1::2], strict=False)))
    return None


def _near_lookup(
    near: NearCache,
    base: str,
    now: float,
    values_for: Callable[[tuple[str, ...]], list[bytes | None]],
    generation: int,
) -> Lookup | None:
    """Return the hit the near cache holds for a URL (its key ``base``) or this request's
    variant of it, or None."""
    held = near.get(base, now)
    if held is None:
        return None
    if isinstance(held, CachedEntry):
        return Lookup(state="hit", generation=generation, entry=held, key=base, near=True)
    names = held.names
    vkey = keys.variant_key(base, keys.variant_hash(names, values_for(names)))
    variant = near.get(vkey, now)
    if not isinstance(variant, CachedEntry):
        return None
    return Lookup(
        state="hit", generation=generation, entry=variant, names=names, key=vkey, near=True
    )
