"""What of an app's response the cache keeps, and the writes that keep or drop it.

The policy (``policy.decide_store``, pure) says whether a response may be stored and for how
long; this module applies it with the middleware's options (``decide``), builds the entry a
response becomes (hop-by-hop headers and those ``Connection`` names out, ``Content-Length``
and an optional ``ETag`` in, the tags and the request values it varies on), bounds its size,
and writes it (``put``) or drops an entry a newer answer superseded (``drop_superseded``).
"Why was this not stored?" is answered here and in ``policy``.

May call: ``policy``, ``RedisCache.store`` and ``drop_entry`` through ``guarded``.
"""

from __future__ import annotations

import hashlib

from . import policy
from ._types import RawHeaders
from .admit import Request
from .cache import FillLock, Lookup
from .config import MAX_TAG_LENGTH, MAX_TAGS, CacheConfig
from .context import Context
from .entry import CachedEntry, is_sendable
from .guard import Skipped, guarded
from .keys import MAX_INDEXED_HOST
from .stats import logger

#: Headers that describe one connection, not the response: never stored.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"age",
    }
)

NO_BODY_STATUSES = frozenset({204, 304})


def connection_options(headers: RawHeaders) -> frozenset[bytes]:
    """Return the lowercase names a response's ``Connection`` fields list: options for this
    one connection, each naming the field (if any) that goes with it (RFC 9110 7.6.1)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            for option in value.split(b","):
                option = option.strip(b" \t").lower()
                if option:
                    named.add(option)
    return frozenset(named)


def end_to_end(headers: RawHeaders) -> RawHeaders:
    """Return the response fields a cache keeps: not the hop-by-hop ones, nor those its
    ``Connection`` names, which a proxy removes before forwarding and a cache before
    storing (RFC 9111 3.1). Names are lowercase."""
    dropped = HOP_BY_HOP
    if any(name == b"connection" for name, _ in headers):
        dropped = dropped | connection_options(headers)
    return [(k, v) for k, v in headers if k not in dropped]


#: Response headers that carry surrogate keys (tags): name -> separator (None: whitespace).
TAG_HEADERS: dict[bytes, str | None] = {b"surrogate-key": None, b"cache-tag": ","}

#: A varying request header's value is kept whole only up to this many bytes in an entry
#: (it is there for ``inspect``; the key holds its digest): a 60 KB ``User-Agent`` must not
#: make a 500-byte page cost 60 KB of Redis for its whole TTL.
MAX_VARY_VALUE = 256

#: The request headers an entry is keyed on and this request's values of them.
Varying = tuple[tuple[str, ...], list[bytes | None] | None]


def decide(
    config: CacheConfig,
    request: Request,
    status: int,
    headers: RawHeaders,
    now: float,
) -> policy.StoreDecision:
    """The policy's verdict on storing a response to ``request``, with the options."""
    return policy.decide_store(
        status,
        headers,
        now=now,
        default_ttl=request.default_ttl,
        cacheable_statuses=config.statuses,
        cache_set_cookie=config.cache_set_cookie,
        request_has_authorization=request.has_authorization,
        request_has_cookie=request.has_cookie,
        request_credentials=request.credentials,
        stale_while_revalidate=config.stale_while_revalidate,
        stale_if_error=config.stale_if_error,
        keep_for_revalidation=config.keep_for_revalidation,
        error_ttl=config.error_ttl,
        stale_on_error_grace=config.stale_on_error_grace,
        targeted=config.targeted_fields,
        heuristic_fraction=config.heuristic_fraction if config.heuristic_freshness else None,
        heuristic_max_ttl=config.heuristic_max_ttl,
    )


def varying(config: CacheConfig, request: Request, decision: policy.StoreDecision) -> Varying:
    """The request headers an entry is keyed on (the response's Vary and ``vary_on``), and
    this request's values of them."""
    names = tuple(sorted(set(decision.vary) | set(config.vary_on_names)))
    return names, request.values_for(names) if names else None


def check_response(
    config: CacheConfig,
    request: Request,
    status: int,
    headers: RawHeaders,
    tags: tuple[str, ...],
    decision: policy.StoreDecision,
    *,
    trailers: bool,
) -> tuple[policy.StoreDecision, Varying | None, tuple[tuple[str, bytes | None], ...], int]:
    """The policy's verdict (``decide``), refused further for what only the response's
    message shows: a partial answer to a range, trailers, a header no server could send
    again, or a size over ``max_body_size`` (headers, vary values and tags counted with the
    body). Return it with the varying request headers and their values (``varying``; None
    when refused), those values as stored (``vary_record``) and what the entry stores besides
    its body (``entry_size``)."""
    if request.range is not None and status in (206, 416):
        # One request's range: no hit-for-pass, no superseding (REQUEST_REFUSALS).
        decision = policy.refuse("partial")
    if decision.store and trailers:
        decision = policy.refuse("trailers")
    if decision.store and not is_sendable(headers):
        # A header no server could send again (a control character, a name that is not a
        # token, two Content-Lengths): stored, it would only ever be read as damaged.
        decision = policy.refuse("unsendable")
    if not decision.store:
        return decision, None, (), entry_size(headers, (), ())
    vary = varying(config, request, decision)
    record = vary_record(*vary) if vary[0] else ()
    size = entry_size(headers, record, tags)
    limit = config.max_body_size
    if size > limit or declared_length(headers) > limit - size:
        decision = policy.refuse("too-large")
    return decision, vary, record, size


def vary_record(
    names: tuple[str, ...], values: list[bytes | None] | None
) -> tuple[tuple[str, bytes | None], ...]:
    """Return the request values an entry varies on as stored: each bounded to
    ``MAX_VARY_VALUE`` bytes, a longer one cut and marked with its full length."""
    record: list[tuple[str, bytes | None]] = []
    for name, value in zip(names, values or (), strict=True):
        if value is not None and len(value) > MAX_VARY_VALUE:
            value = value[:MAX_VARY_VALUE] + f"...[{len(value)} bytes]".encode()
        record.append((name, value))
    return tuple(record)


def entry_size(
    headers: RawHeaders,
    record: tuple[tuple[str, bytes | None], ...],
    tags: tuple[str, ...],
) -> int:
    """What an entry stores besides its body: headers, the request values it varies on (as
    stored) and its tags. ``max_body_size`` bounds a whole entry, these counted with the
    body."""
    size = sum(len(k) + len(v) for k, v in headers)
    if record:
        size += sum(len(n) + len(v or b"") for n, v in record)
    if tags:
        size += sum(len(t) for t in tags)
    return size


def declared_length(headers: RawHeaders) -> int:
    """The response's ``Content-Length``, 0 when absent or not a number."""
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def response_tags(headers: RawHeaders) -> tuple[str, ...]:
    """Return the tags named by the response's Surrogate-Key and Cache-Tag headers."""
    tags: list[str] = []
    for name, value in headers:
        if name in TAG_HEADERS:
            text = value.decode("latin-1")
            separator = TAG_HEADERS[name]
            parts = text.split(separator) if separator else text.split()
            tags += [t.strip() for t in parts if t.strip() and len(t.strip()) <= MAX_TAG_LENGTH]
    unique = tuple(dict.fromkeys(tags))
    if len(unique) > MAX_TAGS:
        logger.debug("only the first %d of %d tags are kept", MAX_TAGS, len(unique))
    return unique[:MAX_TAGS]


def response_entry(
    config: CacheConfig,
    decision: policy.StoreDecision,
    status: int,
    headers: RawHeaders,
    body: bytes,
    stored_at: float,
    tags: tuple[str, ...],
    record: tuple[tuple[str, bytes | None], ...],
) -> CachedEntry:
    """The entry a response becomes: hop-by-hop headers and those ``Connection`` names out
    (``end_to_end``), ``Content-Length`` in (and an ``ETag`` with ``add_etag``)."""
    kept = end_to_end(headers)
    if status not in NO_BODY_STATUSES and not any(k == b"content-length" for k, _ in kept):
        kept.append((b"content-length", str(len(body)).encode()))
    if config.add_etag and status == 200 and not any(k == b"etag" for k, _ in kept):
        digest = hashlib.blake2b(body, digest_size=16).hexdigest().encode()
        kept.append((b"etag", b'"' + digest + b'"'))
    return stored_entry(decision, status, kept, body, stored_at, tags, record)


def stored_entry(
    decision: policy.StoreDecision,
    status: int,
    headers: RawHeaders,
    body: bytes,
    stored_at: float,
    tags: tuple[str, ...],
    request_vary: tuple[tuple[str, bytes | None], ...],
) -> CachedEntry:
    """The entry to store for a response, with the freshness the policy decided."""
    return CachedEntry(
        status=status,
        headers=headers,
        body=body,
        stored_at=stored_at,
        fresh_for=decision.fresh_for,
        stale_for=decision.stale_for,
        initial_age=decision.initial_age,
        stale_while_revalidate=decision.stale_while_revalidate,
        stale_if_error=decision.stale_if_error,
        shared_with_auth=decision.shared_with_auth,
        tags=tags,
        request_vary=request_vary,
    )


async def put(
    ctx: Context,
    request: Request,
    found: Lookup | None,
    entry: CachedEntry,
    decision: policy.StoreDecision,
    vary: Varying,
    fill: FillLock | None,
) -> bool:
    """Store an entry with its indexes, releasing the request's fill lock (``fill``) in the
    same script; return whether Redis took it."""
    cache = ctx.cache
    names, values = vary
    host: bytes | None = cache.key_host(request.host, request.scheme)
    if len(request.host) > MAX_INDEXED_HOST:
        host = None  # no real host is this long: keep it out of the index of hosts
    result = await guarded(
        cache,
        ctx.config.timeout,
        "store",
        lambda: cache.store(
            request.uhash,
            entry,
            ttl=decision.ttl,
            names=names,
            values=values,
            generation=found.generation if found is not None else None,
            found_names=found.names if found is not None else None,
            host=host,
            path=request.path,
            fill=fill,
        ),
    )
    if isinstance(result, Skipped):
        ctx.stores_taken = False
        return False
    ctx.stores_taken = True
    cache.stats.stored += 1
    if request.debug:
        logger.debug(
            "stored (ttl=%d s, %d bytes%s): %s %r",
            int(decision.ttl),
            len(entry.body),
            f", vary={','.join(names)}" if names else "",
            request.method,
            request.path,
        )
    return True


async def drop_superseded(ctx: Context, request: Request, found: Lookup | None) -> None:
    """Drop the entry the request found: the app's answer to it may not be stored
    (``no-store``, ``private`` …) and says the entry is out of date (RFC 9111 4.3.3), so
    it must not be served stale again, in the background refresh's window or as a
    stale-if-error stand-in. Bounded like every other call; on failure the entry stays."""
    entry = found.entry if found is not None else None
    if found is None or entry is None or found.key is None:
        return
    key = found.key
    cache = ctx.cache
    dropped = await guarded(
        cache,
        ctx.config.timeout,
        "drop",
        lambda: cache.drop_entry(request.uhash, key, entry.stored_at),
    )
    if dropped is True:
        # An invalidation by the newer answer: counted like one (and so as a purge).
        stats = cache.stats
        stats.invalidated += 1
        stats.purged += 1
        if request.debug:
            logger.debug(
                "invalidated (superseded by an answer that may not be stored): %s %r",
                request.method,
                request.path,
            )
