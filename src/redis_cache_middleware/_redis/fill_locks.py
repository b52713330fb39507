"""Fill locks: one request per URL (variant) fills it from the app while the others wait for
its entry. ``FillLock``, the tokens that tell owners apart, and the scripts that take,
renew, take over and release a lock.

A lookup can also take the URL's lock in its own round trip (``lookup``), and a store
releases it in its own transaction (``store``): both name the lock with ``keys.lock_key``
and answer ``ACQUIRED``, ``HELD`` or ``PASS`` as here. This module sends only its own
scripts; of the cache's modules it imports only ``connect``'s client type, to type-check.
"""

from __future__ import annotations

import itertools
import os
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import keys

if TYPE_CHECKING:
    from .state import CacheState

ACQUIRED, HELD, PASS = 1, 0, -1

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


_TOKEN_PREFIX = secrets.token_hex(6)
_TOKEN_COUNTER = itertools.count()
#: The random prefix and this process's id: a forked worker shares the prefix, so its id is
#: taken again in the child (``getpid`` is a system call: not one per lookup).
_token_stem = f"{_TOKEN_PREFIX}.{os.getpid():x}."


def _after_fork() -> None:
    global _token_stem
    _token_stem = f"{_TOKEN_PREFIX}.{os.getpid():x}."


os.register_at_fork(after_in_child=_after_fork)


def new_token() -> str:
    """Return a fill lock token no other request, process or host uses: a random prefix
    drawn at import, the process id (forked workers share the prefix) and a counter."""
    return f"{_token_stem}{next(_TOKEN_COUNTER):x}"


@dataclass(frozen=True, slots=True)
class FillLock:
    """A fill lock: which variant of the URL (``""`` for the URL) and the owner's token."""

    variant: str
    token: str


class FillLocks:
    """The fill locks of a namespace: ``RedisCache.acquire_fill``, ``renew_fill``,
    ``take_over_fill`` and ``release_fill``."""

    def __init__(self, state: CacheState) -> None:
        self._state = state
        self._namespace = state.namespace
        client = state.client
        self._acquire_script = client.register_script(ACQUIRE_SCRIPT)
        self._release_script = client.register_script(RELEASE_SCRIPT)
        self._renew_script = client.register_script(RENEW_SCRIPT)
        self._takeover_script = client.register_script(TAKEOVER_SCRIPT)

    async def acquire(self, uhash: str, fill: FillLock, ttl: float, generation: int) -> int:
        """Try to take the fill lock of a URL (variant) for ``ttl`` seconds: ``ACQUIRED``,
        ``HELD`` or ``PASS``. The owner keeps it with ``renew_fill`` while it fills.

        ``PASS`` means the URL's last response was not storable (hit-for-pass): callers go
        to the app at once instead of queueing behind a lock.
        """
        base = keys.url_key(self._namespace, generation, uhash)
        result = await self._state.run_script(
            self._acquire_script,
            [keys.lock_key(base, fill.variant), keys.pass_key(base)],
            [fill.token, max(1, int(ttl * 1000))],
        )
        return int(result)

    async def renew(self, uhash: str, fill: FillLock, ttl: float, generation: int) -> bool:
        """Make a fill lock this request holds live ``ttl`` seconds from now; return False
        when it is no longer ours (it expired, and maybe someone else took it)."""
        base = keys.url_key(self._namespace, generation, uhash)
        result = await self._state.run_script(
            self._renew_script,
            [keys.lock_key(base, fill.variant)],
            [fill.token, max(1, int(ttl * 1000))],
        )
        return int(result) == 1

    async def take_over(
        self, uhash: str, fill: FillLock, ttl: float, window: float, generation: int
    ) -> int:
        """Take a fill lock over for ``ttl`` seconds, whoever holds it, unless another waiter
        did in the last ``window`` seconds (``coalesce_timeout``): ``ACQUIRED``, ``HELD`` or
        ``PASS`` (hit-for-pass), as ``acquire_fill`` answers.

        For a waiter whose wait for a slow fill ran out: one of them, across all processes,
        fills in its place per ``window``; the slow owner's renewals and store leave the lock,
        now this one's, alone.
        """
        base = keys.url_key(self._namespace, generation, uhash)
        result = await self._state.run_script(
            self._takeover_script,
            [
                keys.lock_key(base, fill.variant),
                keys.takeover_key(base, fill.variant),
                keys.pass_key(base),
            ],
            [fill.token, max(1, int(ttl * 1000)), max(1, int(window * 1000))],
        )
        return int(result)

    async def release(
        self, uhash: str, fill: FillLock, generation: int, *, pass_for: float = 0.0
    ) -> None:
        """Release a fill lock if this request still owns it; with ``pass_for``, remember
        for that many seconds that the URL's response is not storable."""
        base = keys.url_key(self._namespace, generation, uhash)
        await self._state.run_script(
            self._release_script,
            [keys.lock_key(base, fill.variant), keys.pass_key(base)],
            [fill.token, int(pass_for * 1000)],
        )
