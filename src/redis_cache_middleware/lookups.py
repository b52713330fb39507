"""Finding a request's entry, and whether what was found may answer it.

``Lookups.find`` asks Redis once per request (concurrent lookups of one key in a process
share one call) and, on a miss, may take the URL's fill lock in the same round trip.
``usable`` says whether the entry found answers this request: fresh, within
stale-while-revalidate, or refused (the client's directives, or a private request the
entry was not shared with). "Why was this not served from the cache?" is answered here and
in ``policy.check_usable``.

May call: ``RedisCache.near_hit``; ``RedisCache.lookup`` and ``remembered_vary`` through
``guarded``; ``policy``.
"""

from __future__ import annotations

import asyncio

from . import policy
from .admit import Request
from .cache import FillLock, Lookup, RedisCache
from .config import CacheConfig
from .entry import CachedEntry
from .guard import Skipped, guarded
from .keys import variant_hash


class Lookups:
    """The lookups of one middleware, shared in the process while under way."""

    def __init__(self, cache: RedisCache, config: CacheConfig) -> None:
        self.cache = cache
        self.config = config
        self._vary_guess = config.vary_on_names or None
        #: In-process lookups under way, by key: concurrent lookups share one.
        self._pending: dict[str, asyncio.Future[Lookup | None]] = {}

    async def find(
        self, request: Request, fill: FillLock | None = None
    ) -> tuple[Lookup | None, int | None]:
        """Look the request up, bounded by the timeout: what was found (None when Redis
        failed) and, with ``fill``, how taking that lock went.

        Concurrent lookups of one key in this process share one Redis call (a burst for a
        hot URL costs one round trip, not one per request); a shared result is used only
        where it cannot depend on this request's own headers.

        With ``fill``, a miss also tries the URL's fill lock in the same round trip:
        ``ACQUIRED``, ``HELD`` or ``PASS``, for this request only (a shared result never
        hands the lock to another request); None when it was not tried.
        """
        cache = self.cache
        near = cache.near_hit(request.uhash, request.values_for)
        if near is not None:
            return near, None  # from this process's memory: no Redis call to bound or share
        guess = cache.remembered_vary(request.uhash) or self._vary_guess
        key = request.uhash
        if guess:
            key += ":" + variant_hash(guess, request.values_for(guess))
        pending = self._pending.get(key)
        if pending is not None:
            shared = await asyncio.shield(pending)
            if shared is None or not shared.names or shared.names == guess:
                return shared, None
        future: asyncio.Future[Lookup | None] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        found: Lookup | None = None
        try:
            result = await guarded(
                cache,
                self.config.timeout,
                "lookup",
                lambda: cache.lookup(
                    request.uhash,
                    request.values_for,
                    guess,
                    fill=fill,
                    fill_ttl=self.config.fill_lock_ttl,
                ),
            )
            found = None if isinstance(result, Skipped) else result
        finally:
            del self._pending[key]
            future.set_result(found)
        return found, found.lock if found is not None and fill is not None else None


def usable(request: Request, found: Lookup, entry: CachedEntry, age: float) -> policy.Usability:
    """Whether the entry found answers the request, now that it is ``age`` seconds old.

    An entry not shared with a private request (credentials, cookies) is refused for it
    whatever its age, with a reason of ``policy.REQUEST_REFUSALS``: fresh, it is not served;
    stale, it neither stands in for the app's failure nor is revalidated for this request.
    """
    if request.private:
        why = private_refusal(request, found)
        if why is not None:
            return policy.Usability(usable=False, reason=why)
    return policy.check_usable(
        entry.fresh_for, age, request.directives, entry.stale_while_revalidate
    )


def private_refusal(request: Request, found: Lookup) -> str | None:
    """Return why the entry found may not answer a private request (credentials, cookies),
    else None: ``authorization`` unless the response allowed it (RFC 9111 3.5), ``cookie``
    or ``credentials`` unless it is explicitly shared or keyed on them."""
    entry = found.entry
    assert entry is not None
    if request.has_authorization and not entry.shared_with_auth:
        return "authorization"
    if not request.has_cookie and not request.credentials:
        return None
    return policy.private_request_refusal(
        policy.is_explicitly_shared(entry.headers, request.targeted),
        found.names or (),
        request.has_cookie,
        request.credentials,
    )


def fill_variant(request: Request, found: Lookup | None) -> str:
    """Return which variant a fill is for: "" for a URL whose Vary is not known yet."""
    names = found.names if found is not None else None
    if not names:
        return ""
    return variant_hash(names, request.values_for(names))
