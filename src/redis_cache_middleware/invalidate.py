"""Invalidation by unsafe methods (RFC 9111 4.4): a request whose method is not known to be
safe (any but GET, HEAD, OPTIONS and TRACE: POST, PUT, PATCH, DELETE, and extension methods
such as PROPPATCH or one no specification defines) that succeeds purges the cached GET of its
URL, and of the ``Location`` / ``Content-Location`` it names on the same host, before the
client hears back.

May call: the app; ``RedisCache.purge_hashes`` through ``guarded``; the cache's ``on_purge``
hook, behind the response.
"""

from __future__ import annotations

from collections.abc import Callable
from logging import DEBUG
from urllib.parse import quote, unquote, urlsplit

from ._types import Message, RawHeaders, Receive, Scope, Send
from .cache import PurgeEvent
from .context import Context
from .guard import Skipped, guarded
from .stats import logger

#: The methods RFC 9110 9.2.1 defines as safe. Every other one, a method of unknown safety
#: included, invalidates the cached GET of its URL when it succeeds (RFC 9111 4.4). Method
#: names are case-sensitive (RFC 9110 9.1): ``get`` is not ``GET``.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def invalidates(method: str) -> bool:
    """Return whether a request with this method invalidates its URL when it succeeds: any
    method not known to be safe (RFC 9111 4.4)."""
    return method not in SAFE_METHODS


#: Characters a path keeps unescaped in the URLs given to ``on_purge`` (RFC 3986 pchar).
URL_PATH_SAFE = "/:@!$&'()*+,;=-._~"


class Invalidate:
    """Run an unsafe request; if it succeeds (2xx, 3xx), purge the cached GET of its URL and
    (unless ``invalidate_locations`` is off: an open redirect would let anyone evict any
    URL of the host) of ``Location`` / ``Content-Location`` on the same host, before the
    client hears back,
    so that the client's next read sees the change (RFC 9111 4.4). The cache's ``on_purge``
    hook hears of it in a task of its own: the response waits for the purge, not the hook."""

    def __init__(self, ctx: Context, scope: Scope) -> None:
        self.ctx = ctx
        self.scope = scope

    async def run(self, receive: Receive, send: Send) -> None:
        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start" and 200 <= message["status"] < 400:
                await self._purge(message.get("headers", []))
            await send(message)

        await self.ctx.app(self.scope, receive, send_wrapper)

    async def _purge(self, response_headers: RawHeaders) -> None:
        scope = self.scope
        cache = self.ctx.cache
        scheme = scope.get("scheme", "http")
        host = b"\x00".join(v for k, v in scope["headers"] if k == b"host")  # as Request does
        targets = [(scope["path"], scope.get("query_string", b""))]
        locations = self.ctx.config.invalidate_locations
        same_host = cache.key_host(host, scheme) if locations else b""
        for key, value in response_headers if locations else ():
            if bytes(key).lower() in (b"location", b"content-location"):
                target = _same_host_target(bytes(value), scheme, same_host, cache.key_host)
                if target is not None:
                    targets.append(target)
        uhashes = [cache.url_hash(scheme, host, path, query) for path, query in targets]
        removed = await guarded(
            cache,
            self.ctx.config.timeout,
            "invalidation",
            lambda: cache.purge_hashes(uhashes),
        )
        count = None if isinstance(removed, Skipped) else removed
        if count is not None:
            cache.stats.invalidated += count
        if logger.isEnabledFor(DEBUG):
            logger.debug(
                "invalidated (%s): %s %r purged %s",
                "redis-error" if count is None else f"{count} removed",
                scope["method"],
                scope["path"],
                ", ".join(repr(path) for path, _ in targets),
            )
        if cache.has_purge_hook:
            # The hook runs behind the response; the URLs changed even when Redis failed.
            urls = tuple(dict.fromkeys(_absolute(scheme, host, p, q) for p, q in targets))
            cache.notify_soon(PurgeEvent("invalidate", urls, count))


def _absolute(scheme: str, host: bytes, path: str, query: bytes) -> str:
    """Return the absolute URL of a request target, as ``RedisCache.purge_url`` takes it."""
    url = f"{scheme}://{host.decode('latin-1')}{quote(path, safe=URL_PATH_SAFE)}"
    return f"{url}?{query.decode('latin-1')}" if query else url


def _same_host_target(
    value: bytes, scheme: str, host: bytes, key_host: Callable[[bytes, str], bytes]
) -> tuple[str, bytes] | None:
    """Return ``(path, query)`` of a Location-like value on the request's host (``host``
    as keys hold it: ``key_host``, which resolves host aliases), else None."""
    parts = urlsplit(value.decode("latin-1").strip())
    if parts.scheme or parts.netloc:
        if parts.scheme not in ("", scheme):
            return None
        if key_host(parts.netloc.encode("latin-1"), scheme) != host:
            return None
    if not parts.path.startswith("/"):
        return None  # relative references other than absolute paths are not resolved
    return unquote(parts.path), parts.query.encode("latin-1")
