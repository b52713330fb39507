"""Coalescing: concurrent misses for one URL and variant make one app call.

In one process, the requests for a key follow the one filling it (``Fills``); across
processes, a fill lock in Redis (``LockCalls``) lets one request call the app while the
others poll for its entry with backoff, taking the lock over soon after its owner vanished.
Waiters whose ``coalesce_timeout`` runs out do not all go to the app: the first in each
process asks Redis (``LockCalls.take_over``), at most one per ``coalesce_timeout`` across
all processes takes the fill over and calls the app, and the others wait again, as long
again, served by whichever fill stores first. Requests with ``Cache-Control: no-cache``
take the same path (``refill``), served only by an entry produced after they arrived. A
URL whose response was not storable is remembered for ``hit_for_pass_ttl`` so that later
requests are not serialised behind a lock (Varnish's hit-for-pass).

May call: ``Forward`` (the filler's app call), ``Lookups`` (the waiters' looks),
``LockCalls``, ``respond``.
"""

from __future__ import annotations

import asyncio
import time

from ._timeouts import bounded
from ._types import Receive, Send
from .admit import Request
from .cache import ACQUIRED, HELD, FillLock, Lookup, new_token
from .context import Context
from .entry import CachedEntry
from .forward import Forward, Outcome
from .lookups import Lookups, fill_variant, usable
from .respond import collapsed_status, replay
from .revalidate import stand_ins
from .stats import logger

#: Waiters poll for the filled entry starting at this delay, doubling up to the cap.
POLL_FIRST, POLL_CAP = 0.005, 0.1

#: A fill lock tried for a variant, and how that went (``ACQUIRED``, ``HELD``, ``PASS``, or
#: None when Redis failed).
Tried = tuple[FillLock, int | None]


class Coalescer:
    """The misses of one middleware: each fills the entry, or follows the fill under way."""

    def __init__(self, ctx: Context, lookups: Lookups) -> None:
        self.ctx = ctx
        self.lookups = lookups
        #: In-process fills under way, by fill key: waiters in this process follow them.
        self.inflight: dict[str, Fills] = {}

    async def refill(self, request: Request, receive: Receive, send: Send) -> None:
        """Answer a request ``no-cache`` (or ``Pragma: no-cache``) with a response the app
        produced after it arrived (RFC 9111 5.2.1.4), coalesced like a miss: by its own app
        call, whose response refills the entry, or by a fill of another request that began
        answering after this one arrived (``Cache-Status: fwd=request; ...; collapsed``).

        The lookup's entry does not answer it; what the lookup says of the URL (its Vary
        names, the generation, a fill lock on a cold URL) is used as for a miss.
        """
        since = self.ctx.clock()
        fill = FillLock(variant="", token=new_token())
        found, state = await self.lookups.find(request, fill)
        if found is None:
            forward = Forward(self.ctx, request, fwd="request", detail="redis-error", store=False)
            await forward.run(request.scope, receive, send)
            return
        # Without its entry: an answer that may not be stored leaves the entry alone, as
        # the answer to a bypass does (``drop_superseded``).
        found = Lookup(state=found.state, generation=found.generation, names=found.names)
        tried = (fill, state) if state is not None else None
        await Miss(self, request, found, receive, send, "request", None, since).run(tried)


class Miss:
    """A request the cache could not answer, on its way: it fills the entry, or waits for
    the request that fills it (in this process or another) and serves what that one
    stores. It holds only what its answer needs.

    ``found`` is what its lookup found (``stale``: an entry too old to serve, which may still
    stand in for an error or be revalidated); ``fwd`` its ``Cache-Status`` forward reason.
    ``since`` is set for a request ``no-cache`` (when it arrived): only an entry whose
    response the app produced after then may serve it; for a fill that began answering
    before, it waits for the next fill, or makes it.
    """

    __slots__ = (
        "coalescer",
        "ctx",
        "found",
        "fwd",
        "key",
        "receive",
        "request",
        "send",
        "since",
        "stale",
        "variant",
    )

    def __init__(
        self,
        coalescer: Coalescer,
        request: Request,
        found: Lookup,
        receive: Receive,
        send: Send,
        fwd: str,
        stale: CachedEntry | None,
        since: float | None = None,
    ) -> None:
        self.coalescer = coalescer
        self.ctx = coalescer.ctx
        self.request = request
        self.found = found
        self.receive = receive
        self.send = send
        self.fwd = fwd
        self.stale = stale
        self.since = since
        self.variant = fill_variant(request, found)
        self.key = f"{request.uhash}:{self.variant}"

    def _forward(self, fill: FillLock | None = None) -> Forward:
        """The forward of this miss, with what the stale entry found may do for it."""
        fallback = revalidate = None
        if self.stale is not None:
            fallback, revalidate = stand_ins(
                self.stale, self.request, self.ctx.clock(), self.ctx.config.stale_on_error_grace
            )
        return Forward(
            self.ctx,
            self.request,
            self.found,
            fwd=self.fwd,
            fallback=fallback,
            revalidate=revalidate,
            fill=fill,
        )

    async def _forward_alone(self) -> None:
        await self._forward().run(self.request.scope, self.receive, self.send)

    async def run(self, tried: Tried | None = None) -> None:
        """Answer it. ``tried`` is the fill lock the lookup took in its round trip, if it
        did: one it ACQUIRED is this request's to fill under at once, or to give back."""
        request = self.request
        config = self.ctx.config
        if not config.coalesce or request.private:
            await self._forward_alone()
            return
        owns_lock = tried is not None and tried[1] == ACQUIRED
        inflight = self.coalescer.inflight
        deadline = time.monotonic() + config.coalesce_timeout
        while not owns_lock and (fills := inflight.get(self.key)) is not None:
            # Other requests of this process are filling, or waiting for another process's
            # fill: follow them, and look again when one of them ends.
            outcome = await fills.next_end(deadline - time.monotonic())
            if outcome is Outcome.STORED and await self._serve_filled():
                return
            if outcome is Outcome.TIMEOUT:
                # Waited coalesce_timeout: one waiter takes the fill over, the others (here
                # or in other processes) wait again, as long again, for any fill to store.
                deadline = time.monotonic() + config.coalesce_timeout
                if fills.claim_takeover(config.coalesce_timeout):
                    # The first here: it fills, or if a waiter of another process took the
                    # fill over, looks for that one's entry in Redis for this process.
                    takeover = FillLock(variant=self.variant, token=new_token())
                    tried = (takeover, await self._take_over(takeover))
                    break
            elif outcome is not Outcome.ERROR and not (
                outcome is Outcome.STORED and self.since is not None
            ):
                # Not storable, or not our variant: no more waiting.
                await self._forward_alone()
                return
            # The fill failed, or answered before this request came: follow the fills still
            # under way, or become the next filler.
        fills = inflight.get(self.key)
        if fills is None:
            fills = inflight[self.key] = Fills()
        fills.running += 1
        outcome = Outcome.ERROR
        try:
            outcome = await self._fill_or_wait(fills, deadline, tried)
        finally:
            fills.end(outcome)
            # A fill that took over from this one may be under way: its waiters stay.
            if not fills.running and inflight.get(self.key) is fills:
                del inflight[self.key]

    async def _fill_or_wait(self, fills: Fills, deadline: float, tried: Tried | None) -> Outcome:
        """Fill the entry under the Redis lock, or wait for the process that holds it.

        ``tried`` is the lock the lookup (or a takeover) already tried for this variant, and
        how that went. ``fills`` are this process's fills of the key, this one among them.
        Return the outcome for this process's waiters.
        """
        locks = self.ctx.locks
        uhash = self.request.uhash
        generation = self.found.generation
        state: int | None
        if tried is not None and tried[0].variant == self.variant:
            fill, state = tried
        else:
            if tried is not None and tried[1] == ACQUIRED:  # another variant's lock: give back
                await locks.release(uhash, tried[0], generation)
            fill = FillLock(variant=self.variant, token=new_token())
            state = await locks.acquire(uhash, fill, generation)
        delay = POLL_FIRST
        waited = False
        while True:
            if state == HELD and time.monotonic() >= deadline:
                # Waited coalesce_timeout: one waiter takes the fill over, as in ``run``.
                window = self.ctx.config.coalesce_timeout
                deadline = time.monotonic() + window
                if fills.claim_takeover(window):
                    state = await self._take_over(fill)
            if state == ACQUIRED and waited and await self._serve_filled():
                # The lock came free because its owner stored (the store deletes the lock),
                # after our last look: serve that entry, not a second app call.
                await locks.release(uhash, fill, generation)
                return Outcome.STORED
            if state != HELD:
                # The filler; or Redis failed, or the URL is known not to be storable
                # (hit-for-pass): no queueing either way.
                forward = self._forward(fill if state == ACQUIRED else None)
                return await forward.run(self.request.scope, self.receive, self.send)
            # Held by another process: wait for its entry, or for the lock to free up (and
            # look at once when a fill of this process ends).
            await fills.next_end(min(delay, deadline - time.monotonic()))
            delay = min(delay * 2, POLL_CAP)
            waited = True
            if await self._serve_filled():
                return Outcome.STORED
            state = await locks.acquire(uhash, fill, generation)

    async def _take_over(self, fill: FillLock) -> int | None:
        """The first waiter of this process whose ``coalesce_timeout`` ran out asks Redis
        whether it takes the fill over, calling the app in place of the slow filler. None
        when Redis failed: this waiter fills without a lock."""
        request = self.request
        state = await self.ctx.locks.take_over(request.uhash, fill, self.found.generation)
        if state != HELD and request.debug:
            logger.debug(
                "fill taken over after waiting %g s (coalesce_timeout): %s %r",
                self.ctx.config.coalesce_timeout,
                request.method,
                request.path,
            )
        return state

    async def _serve_filled(self) -> bool:
        """Serve the entry another request just filled, if it is there and usable; with
        ``since`` (a request ``no-cache``), only if the app produced it (``stored_at``, its
        response's start) at or after that time."""
        request = self.request
        found, _ = await self.coalescer.lookups.find(request)
        if found is None or found.entry is None:
            return False
        entry = found.entry
        if self.since is not None and entry.stored_at < self.since:
            return False
        if request.private:
            # A private request (credentials, cookies) never follows a fill (``run``); were
            # one to get here, another request's fill is not its answer.
            return False
        age = entry.age(self.ctx.clock())
        # Fresh, by the entry and by the request's own max-age / min-fresh, or the request
        # goes on to fill (or wait) itself. Its age as the client is told it (``Age`` is in
        # whole seconds): a fill the app answered while this request waited is ``Age: 0``,
        # which a reload's ``max-age=0`` accepts.
        verdict = usable(request, found, entry, int(age))
        if not verdict.usable or verdict.stale:
            return False
        ctx = self.ctx
        status = collapsed_status(ctx.config.cache_name, self.fwd, entry, age)
        ctx.cache.stats.collapsed += 1
        await replay(entry, age, request, status, self.send)
        if request.debug:
            logger.debug("collapsed (%s): %s %r", status, request.method, request.path)
        return True


class Fills:
    """The requests of this process filling one fill key (URL hash and variant), or waiting
    for another process's fill of it: the process's other requests for the key follow them.

    Usually one; more when a waiter took a slow fill over (``Miss._take_over``) while the slow
    one runs on. Each one's end wakes every follower, so that any fill that stores serves
    them all.
    """

    __slots__ = ("_ended", "_taken_until", "running")

    def __init__(self) -> None:
        #: How many are under way.
        self.running = 0
        #: Until when (monotonic) a waiter of this process has the takeover in hand.
        self._taken_until = 0.0
        self._ended: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

    async def next_end(self, timeout: float) -> Outcome:
        """Wait for the next of them to end: its outcome, or ``TIMEOUT`` after ``timeout``."""
        if timeout <= 0:
            return Outcome.TIMEOUT
        ended = self._ended
        try:
            async with bounded(timeout):
                return await asyncio.shield(ended)
        except asyncio.TimeoutError:  # TimeoutError on 3.11+, not on 3.10
            # An end in the same turn of the loop as the deadline is still an end: taken
            # for a timeout, its followers would wait for the next one (a whole
            # coalesce_timeout) and then call the app beside an entry already stored.
            return ended.result() if ended.done() else Outcome.TIMEOUT

    def claim_takeover(self, window: float) -> bool:
        """Whether a waiter whose wait ran out is the first of this process to in ``window``
        seconds: it then tries to take the fill over; the others wait
        again, for its fill or, when it loses to another process, its look in Redis."""
        now = time.monotonic()
        if self._taken_until > now:
            return False
        self._taken_until = now + window
        return True

    def end(self, outcome: Outcome) -> None:
        """One of them ended, with ``outcome``: wake its followers."""
        self.running -= 1
        ended, self._ended = self._ended, asyncio.get_running_loop().create_future()
        ended.set_result(outcome)
