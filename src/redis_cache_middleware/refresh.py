"""Background refreshes (stale-while-revalidate, RFC 5861 3): a stale entry is answered at
once and refreshed behind the response, once per entry and process and, under the fill lock,
once across every process.

May call: ``Forward`` (the refresh's app call, its response sent nowhere), ``Lookups``,
``FillLocks``; tasks run in the middleware's ``BackgroundTasks``.
"""

from __future__ import annotations

from . import policy
from .admit import Request
from .background import BackgroundTasks
from .cache import ACQUIRED, FillLock, Lookup, new_token
from .context import Context
from .entry import CachedEntry
from .forward import Forward, Outcome
from .guard import warn
from .lookups import Lookups, fill_variant
from .respond import discard, empty_receive
from .revalidate import has_validators


class Refresher:
    """Start and run the background refreshes of one middleware."""

    def __init__(self, ctx: Context, lookups: Lookups, background: BackgroundTasks) -> None:
        self.ctx = ctx
        self.lookups = lookups
        self.background = background
        #: Background refreshes this process has started and not finished, by fill key.
        self._refreshing: set[str] = set()

    def refresh_later(self, request: Request, found: Lookup, entry: CachedEntry) -> None:
        """Refresh ``entry``, found for ``request``, in a task of its own (if none of this
        process is refreshing it already and ``max_background_refreshes`` allows)."""
        key = f"{request.uhash}:{fill_variant(request, found)}"
        if key in self._refreshing:
            return  # this process is refreshing it already: no second task, no lock attempt
        scope = request.scope
        background_scope = {**scope, "method": "GET", "headers": list(scope["headers"])}
        refresh = Request(background_scope, self.ctx.config)
        refresh.uhash = request.uhash
        refresh.default_ttl = request.default_ttl
        started = self.background.spawn(self._refresh(refresh, found, entry, key))
        if started:
            self._refreshing.add(key)
        else:
            self.ctx.cache.stats.not_stored["refresh-limit"] += 1

    async def _refresh(self, request: Request, found: Lookup, entry: CachedEntry, key: str) -> None:
        """Refresh a stale entry once across every process: only the fill lock's owner runs
        the app; a failure (the app raises or answers an error status) leaves the stale entry
        in place and is logged as a warning."""
        try:
            await self._refresh_once(request, found, entry)
        finally:
            self._refreshing.discard(key)

    async def _refresh_once(self, request: Request, found: Lookup, entry: CachedEntry) -> None:
        locks = self.ctx.locks
        fill = FillLock(variant=fill_variant(request, found), token=new_token())
        if await locks.acquire(request.uhash, fill, found.generation) != ACQUIRED:
            return
        # The lock may be free because another process has just refreshed the entry (its
        # store releases the lock): look again rather than call the app a second time.
        again, _ = await self.lookups.find(request)
        current = again.entry if again is not None else None
        if current is not None and current.stored_at > entry.stored_at:
            await locks.release(request.uhash, fill, found.generation)
            return
        forward = Forward(
            self.ctx,
            request,
            found,
            fwd="stale",
            revalidate=entry if has_validators(entry) else None,
            fill=fill,
        )
        failed = f"redis-cache background refresh of {request.path} failed"
        try:
            outcome = await forward.run(request.scope, empty_receive(), discard)
        except Exception as exc:
            # Rate-limited: an outage fails every stale URL's refresh at once.
            warn("background refresh", f"{failed}; the stale entry stays", exc)
            return
        if outcome is not Outcome.STORED and policy.is_error_status(forward.status):
            warn(
                "background refresh",
                f"{failed} (the app answered {forward.status}); the stale entry stays",
            )
