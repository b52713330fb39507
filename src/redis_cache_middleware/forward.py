"""``Forward``: send one request to the app, pass its response through to the client, and
keep a copy in the cache when the policy allows.

The responder holds only its response's state; what it shares with every other request (the
app, the cache, the options, the clock) comes in a ``Context``. What is stored, and why not,
is ``storing``'s; the ``Cache-Status`` it writes is spelled by ``respond``.

May call: the app; ``storing`` (decide, put, drop); ``LockCalls`` (renew, release);
``respond``; ``revalidate``.
"""

from __future__ import annotations

import enum

from . import policy, storing
from ._types import Message, RawHeaders, Receive, Scope, Send
from .admit import Request
from .cache import FillLock, Lookup
from .config import MAX_TAGS
from .context import Context
from .entry import CachedEntry
from .respond import discard, forward_status, replay, stale_if_error_status
from .revalidate import stand_in_detail, with_validators
from .stats import logger


class Outcome(enum.Enum):
    """How a fill ended, for the requests waiting on it (``coalesce``)."""

    #: The entry was stored: waiters serve it.
    STORED = "stored"
    #: Not storable, and the URL marked hit-for-pass: waiters go to the app at once.
    REFUSED = "refused"
    #: The app raised: the next waiter fills.
    ERROR = "error"
    #: Nothing stored, for no lasting reason (an error status, a 304 to the client's own
    #: validators): waiters go to the app.
    OTHER = "other"
    #: A waiter's wait ran out (``coalesce_timeout``).
    TIMEOUT = "timeout"


class Forward:
    """Send one request to the app, pass its response through, and store a copy if allowed.

    The client gets each chunk as soon as the app sends it. ``http.response.start`` is held
    until the first body message, so that a response sent whole (the common case) can say in
    ``Cache-Status`` that it is stored: its store is sent to Redis as the response goes out
    (the app's last ``send`` returns after Redis's reply), or, after a store failed,
    completed first so that the header shows the error (``Context.stores_taken``).

    ``found`` is what the request's lookup found (its generation, Vary names and entry);
    ``fallback`` a stale entry that may stand in for an error (``revalidate.stand_in_detail``);
    ``revalidate`` a stale entry whose validators are sent to the app, so that a 304 refreshes
    it without its body; ``fill`` the fill lock this request owns, kept alive while the app
    runs (``LockRenewal``) and released (or deleted by the store) at the end.
    """

    def __init__(
        self,
        ctx: Context,
        request: Request,
        found: Lookup | None = None,
        *,
        fwd: str,
        detail: str | None = None,
        store: bool = True,
        fallback: CachedEntry | None = None,
        revalidate: CachedEntry | None = None,
        fill: FillLock | None = None,
        extra: str = "",
    ) -> None:
        self.ctx = ctx
        self.request = request
        self.found = found
        self.fwd = fwd
        self.detail = detail
        self.extra = extra
        self.store = store
        self.fallback = fallback
        self.revalidate = revalidate if self.store else None
        self.fill = fill
        self.decision: policy.StoreDecision | None = None
        #: The request headers the entry varies on and this request's values of them.
        self._vary: storing.Varying | None = None
        #: Those values as the entry stores them (``vary_record``), once computed.
        self._vary_record: tuple[tuple[str, bytes | None], ...] = ()
        self.start: Message | None = None
        self.started_client = False
        #: The app's answer is replaced by the cache's: an error by the stale fallback
        #: (``swallow``), a 304 to our validators by the revalidated entry (``not_modified``).
        self.swallow = False
        #: Why the fallback answers (``revalidate.stand_in_detail``), once the app failed.
        self.stand_in: str | None = None
        self.not_modified = False
        self.status = 0
        self.headers: RawHeaders = []
        self.tags: tuple[str, ...] = ()
        self.chunks: list[bytes] = []
        self.size = 0
        self.capturing = False
        self.complete = False
        self.stored_at = 0.0
        #: Whether the store of a response sent whole ran (as or before it was sent).
        self.stored: bool | None = None
        self.send: Send = discard
        self.outcome = Outcome.ERROR
        if request.debug:
            logger.debug(
                "%s (fwd=%s%s): %s %r",
                "bypass" if fwd in ("bypass", "request") else "miss",
                fwd,
                f"; detail={self.detail}" if self.detail else "",
                request.method,
                request.path,
            )

    async def run(self, scope: Scope, receive: Receive, send: Send) -> Outcome:
        """Run the app for this request and deliver (and maybe store) its response; return
        how it ended."""
        if self.store and self.request.method == "HEAD":  # a fill: ``get_for_head``
            scope, send = get_for_head(scope), without_body(send)
        self.send = send
        if self.revalidate is not None:
            scope = with_validators(scope, self.revalidate)
        stored = False
        try:
            try:
                await self._call_app(scope, receive)
            except Exception:
                if self.fallback is None or self.started_client or not self._stand_in():
                    raise
                await self._serve_fallback("error")
                return self.outcome
            if self.swallow:
                await self._serve_fallback(str(self.status))
            elif self.not_modified:
                stored = await self._serve_revalidated()
            elif self.capturing and self.complete:
                stored = self.stored if self.stored is not None else await self._store()
            if stored:
                self.outcome = Outcome.STORED
            elif self._not_storable():
                self.outcome = Outcome.REFUSED
                decision = self.decision
                if decision is not None and policy.supersedes_stored(
                    self.status, decision, self.request.is_conditional
                ):
                    # The entry this request found, if any, is out of date: it goes.
                    await storing.drop_superseded(self.ctx, self.request, self.found)
            else:
                self.outcome = Outcome.OTHER
        finally:
            if self.fill is not None and not stored:
                await self.ctx.locks.release(
                    self.request.uhash, self.fill, self._generation, refused=self._not_storable()
                )
        return self.outcome

    @property
    def _generation(self) -> int:
        found = self.found
        return found.generation if found is not None else self.ctx.cache.generation

    def _not_storable(self) -> bool:
        """Whether the response shows the URL's responses cannot be stored (hit-for-pass):
        refused, but not as a 304 to the client's own validators or an error status."""
        decision = self.decision
        return decision is not None and policy.marks_hit_for_pass(
            self.status, decision, self.request.is_conditional
        )

    async def _call_app(self, scope: Scope, receive: Receive) -> None:
        """Run the app; while it runs (and only then), keep this forward's fill lock alive."""
        fill = self.fill
        app = self.ctx.app
        if fill is None:
            await app(scope, receive, self.send_wrapper)
            return
        renewal = self.ctx.locks.keep_alive(self.request.uhash, fill, self._generation)
        try:
            await app(scope, receive, self.send_wrapper)
        finally:
            renewal.stop()

    def _cache_status(self, stored: bool, detail: str | None) -> bytes:
        name = self.ctx.config.cache_name
        return forward_status(name, self.fwd, self.status, self.extra, stored=stored, detail=detail)

    async def send_wrapper(self, message: Message) -> None:
        kind = message["type"]
        if self.swallow or self.not_modified:
            return  # the app's answer is replaced by the cache's
        if kind == "http.response.start":
            await self._on_start(message)
        elif kind == "http.response.body":
            await self._on_body(message)
        else:
            # Trailers, pathsend or anything else we cannot copy: pass it on, store nothing.
            if self.capturing and self.request.debug:
                self._log_not_stored("uncapturable")
            self.capturing = False
            self.chunks = []
            if self.start is not None:
                await self._release_start(stored=False, detail="uncapturable")
            await self._send(message)

    async def _send(self, message: Message) -> None:
        self.started_client = True
        await self.send(message)

    async def _on_start(self, message: Message) -> None:
        self.status = int(message["status"])
        self.headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", [])]
        config = self.ctx.config
        tags = storing.response_tags(self.headers) + config.tags_for(self.request.path)
        self.tags = tuple(dict.fromkeys(tags))
        if not config.keep_tag_header and any(k in storing.TAG_HEADERS for k, _ in self.headers):
            # The tag headers are for the cache: the client does not see them.
            self.headers = [(k, v) for k, v in self.headers if k not in storing.TAG_HEADERS]
            message["headers"] = list(self.headers)
        if self.fallback is not None and self.status in policy.ERROR_STATUSES and self._stand_in():
            # stale-if-error (or the grace): the stale entry answers instead of this error.
            self.swallow = True
            return
        if self.revalidate is not None and self.status == 304:
            self.not_modified = True
            return
        if not self.store:
            self._add_status(message, stored=False, detail=self.detail)
            await self._send(message)
            return
        self.stored_at = self.ctx.clock()
        decision, self._vary, self._vary_record, self.size = storing.check_response(
            config,
            self.request,
            self.status,
            self.headers,
            self.tags,
            storing.decide(config, self.request, self.status, self.headers, self.stored_at),
            trailers=bool(message.get("trailers")),
        )
        self.decision = decision
        if not decision.store:
            self.ctx.cache.stats.not_stored[decision.reason] += 1
            if self.request.debug:
                self._log_not_stored(decision.reason)
            self._add_status(message, stored=False, detail=decision.reason)
            await self._send(message)
            return
        self.capturing = True
        self.start = message

    def _log_not_stored(self, reason: str) -> None:
        request = self.request
        logger.debug(
            "not stored (%s; fwd-status=%d): %s %r",
            reason,
            self.status,
            request.method,
            request.path,
        )

    def _add_status(self, message: Message, *, stored: bool, detail: str | None) -> None:
        headers = list(message.get("headers", []))
        headers.append((b"cache-status", self._cache_status(stored, detail)))
        message["headers"] = headers

    async def _release_start(self, *, stored: bool, detail: str | None) -> None:
        start, self.start = self.start, None
        assert start is not None
        self._add_status(start, stored=stored, detail=detail)
        await self._send(start)

    async def _on_body(self, message: Message) -> None:
        if self.capturing:
            body: bytes = message.get("body", b"")
            more = bool(message.get("more_body", False))
            self.size += len(body)
            if self.size > self.ctx.config.max_body_size:
                # Too large to keep: stop copying, forget what was kept.
                self.capturing = False
                self.chunks = []
                self.decision = policy.refuse("too-large")
                self.ctx.cache.stats.not_stored["too-large"] += 1
                if self.request.debug:
                    self._log_not_stored("too-large")
                if self.start is not None:
                    await self._release_start(stored=False, detail="too-large")
            else:
                self.chunks.append(body)
                if not more:
                    self.complete = True
                if self.start is not None:
                    if self.complete and self.ctx.stores_taken:
                        # Sent whole, and Redis took the last store: the client gets it
                        # first, and the store is sent in the same turn of the event loop,
                        # ahead of any later request's lookup (which the loop starts only
                        # after), before the app's send returns. Another process's request
                        # for the URL finds the entry, or the fill lock the store releases,
                        # and waits for it.
                        # A client gone meanwhile (a server whose send then raises) does not
                        # cost the cache the app's answer: it is stored all the same.
                        try:
                            await self._release_start(stored=True, detail=None)
                            await self._send(message)
                        except Exception:
                            self.stored = await self._store()
                            raise
                        self.stored = await self._store()
                        return
                    if self.complete:
                        # The last store failed: this one completes before the client hears
                        # back (one round trip, bounded by the timeout), so that Cache-Status
                        # says what happened.
                        self.stored = await self._store()
                        detail = None if self.stored else "redis-error"
                        await self._release_start(stored=self.stored, detail=detail)
                    else:
                        # Streamed: whether it will be stored is known only at its end, so
                        # Cache-Status makes no claim.
                        await self._release_start(stored=False, detail=None)
        await self._send(message)

    async def _store(self) -> bool:
        decision = self.decision
        if decision is None or not decision.store:
            return False
        body = b"".join(self.chunks)
        self.chunks = []
        vary = self._vary
        if vary is None:
            vary = storing.varying(self.ctx.config, self.request, decision)
        record = self._vary_record or storing.vary_record(*vary)
        entry = storing.response_entry(
            self.ctx.config,
            decision,
            self.status,
            self.headers,
            body,
            self.stored_at,
            self.tags,
            record,
        )
        return await storing.put(
            self.ctx, self.request, self.found, entry, decision, vary, self.fill
        )

    def _stand_in(self) -> bool:
        """Whether the fallback may answer for the app's failure now (why: ``stand_in``)."""
        assert self.fallback is not None
        grace = self.ctx.config.stale_on_error_grace
        targets = self.ctx.config.targeted_fields
        self.stand_in = stand_in_detail(self.fallback, self.ctx.clock(), grace, targets)
        return self.stand_in is not None

    async def _serve_fallback(self, why: str) -> None:
        entry = self.fallback
        assert entry is not None and self.stand_in is not None
        status = stale_if_error_status(self.ctx.config.cache_name, why, self.stand_in)
        await replay(entry, entry.age(self.ctx.clock()), self.request, status, self.send)

    async def _serve_revalidated(self) -> bool:
        """The app said 304 to our validators: store the entry again, its headers updated by
        the 304's and its freshness recomputed, and serve it; return whether it was stored.

        The refreshed entry takes the path of a fill (``cache.store``, with the stale
        entry's body): its tag and path indexes, the Vary marker and the variant set grow
        with its new TTL as on any store, so purges keep finding it, and the fill lock is
        released in the same script.
        """
        entry = self.revalidate
        assert entry is not None
        config = self.ctx.config
        now = self.ctx.clock()
        headers = policy.merge_not_modified(entry.headers, storing.end_to_end(self.headers))
        decision = storing.decide(config, self.request, entry.status, headers, now)
        vary = storing.varying(config, self.request, decision)
        # The tags the entry had and any the 304 names: a purge by either finds it.
        tags = tuple(dict.fromkeys(entry.tags + self.tags))[:MAX_TAGS]
        refreshed = storing.stored_entry(
            decision, entry.status, headers, entry.body, now, tags, storing.vary_record(*vary)
        )
        stored = decision.store and await storing.put(
            self.ctx, self.request, self.found, refreshed, decision, vary, self.fill
        )
        self.status = 304
        # Not stored: the policy's reason, or Redis refused or missed the write.
        detail = None if stored else decision.reason if not decision.store else "redis-error"
        status = self._cache_status(stored, detail).decode()
        await replay(refreshed, refreshed.age(now), self.request, status, self.send)
        return stored


#: Request fields a HEAD sent to the app as a GET goes without: range handling is defined
#: for GET only (RFC 9110 14.2), so the HEAD's answer, and the entry, are the whole 200.
_HEAD_ONLY_FIELDS = (b"range", b"if-range")


def get_for_head(scope: Scope) -> Scope:
    """Return the scope of a HEAD as the GET the app is sent to fill the cache (as Varnish
    does): its whole answer is stored, and the client gets the GET's status and headers
    (``Content-Length`` of the whole body included) without the body (``without_body``)."""
    headers = [(k, v) for k, v in scope["headers"] if k not in _HEAD_ONLY_FIELDS]
    return {**scope, "method": "GET", "headers": headers}


def without_body(send: Send) -> Send:
    """Return a ``send`` that passes a response on without its body bytes, for a HEAD the
    app answered as a GET: each body message goes empty, and a file (``pathsend``) too."""

    async def send_headers(message: Message) -> None:
        if message["type"] == "http.response.pathsend":
            message = {"type": "http.response.body", "body": b""}
        elif message["type"] == "http.response.body" and message.get("body"):
            message = {**message, "body": b""}
        await send(message)

    return send_headers
