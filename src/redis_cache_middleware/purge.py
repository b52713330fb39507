"""``PurgeEndpoint``: an authenticated HTTP API that removes entries from a ``RedisCache``.

Two ways in, both behind ``Authorization: Bearer <token>``:

``POST`` with a JSON object (every field optional)::

    {"urls": ["https://shop.example/products/1"],   # every stored variant of each URL
     "tags": ["product-1"],                         # every entry carrying any of the tags
     "prefixes": ["/products", "https://shop.example/cart"],   # path-segment prefixes
     "all": false}                                  # true: clear the whole namespace

A prefix that is a path (``/products``) applies to every host; an absolute URL applies to its
host only. ``/products`` removes ``/products``, ``/products?...`` and ``/products/...``, not
``/products2``. The answer is ``200 {"purged": N}``, N the number of entries removed, plus
``"cleared": true`` when ``all`` was set (a clear removes everything and counts nothing).

``PURGE`` on any URL (the Varnish convention) removes every variant of that URL, rebuilt from
the request's scheme, ``Host`` header, path and query string: ``curl -X PURGE -H
'Authorization: Bearer ...' https://shop.example/products/1``.

Answers are JSON with ``Cache-Control: no-store``:

=====  ====================================================================================
200    ``{"purged": N}`` (and ``"cleared": true``)
400    ``{"error": "<field>: <what is wrong>"}``: malformed JSON, not an object, an unknown
       field, a wrongly typed or malformed value. Nothing is purged when any value is bad.
       The body must be UTF-8 (a leading byte order mark is allowed), nested at most
       ``MAX_DEPTH`` deep (checked before parsing), with no field twice in one object, no
       ``NaN`` or ``Infinity`` and no lone surrogate escape (``"\\ud800"``) in a string.
401    ``{}`` with ``WWW-Authenticate: Bearer``: the token is missing or wrong (the same answer
       for both). Checked before the body is read.
405    ``Allow: POST, PURGE``: any other method.
413    the body is over 64 KiB (by ``Content-Length``, or counted while reading).
503    ``{"error": "redis unavailable"}``: Redis failed; logged as a warning.
=====  ====================================================================================

Route to it at an exact path (``Route("/_cache/purge", endpoint)`` in Starlette,
``app.add_route("/_cache/purge", endpoint)`` in FastAPI; ``Mount`` would answer ``/_cache/purge``
with a redirect to ``/_cache/purge/``), or let the middleware hand requests to it with
``is_purge_request``, which is what makes ``PURGE`` work on every URL. The token is a shared
secret: use at least 16 random characters (``python -c 'import secrets;
print(secrets.token_urlsafe(32))'``) and keep the endpoint behind TLS.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from collections.abc import Sequence
from itertools import accumulate
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from redis.exceptions import RedisError

from ._types import Receive, Scope, Send
from .cache import RedisCache
from .config import MIN_TOKEN_LENGTH
from .exceptions import ConfigError

logger = logging.getLogger("redis_cache_middleware")

#: The largest request body the endpoint reads, in bytes.
MAX_BODY = 64 * 1024

#: How deep a body may nest arrays and objects. The expected shape nests 2 deep (an object
#: of lists); anything deeper is refused before ``json.loads`` sees it, so that the parser
#: never recurses far (30 000 nested ``[`` made it raise ``RecursionError``).
MAX_DEPTH = 8

#: The methods the endpoint answers; every other one gets 405.
ALLOWED_METHODS = ("POST", "PURGE")

FIELDS = ("urls", "tags", "prefixes", "all")

_JSON_HEADERS = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
]
# A host as it may appear in a Host header: a name or IPv4, an IPv6 literal, an optional port.
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9._~!$&'()*+,;=%-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?$")
# What ``quote`` leaves alone in a path: "/" and the sub-delimiters, never "%", "?" or "#".
_PATH_SAFE = "/:@!$&'()*+,;=~"
# A JSON string, or the rest of the text from an unterminated one: it always matches at a
# '"', so that stripping strings is one linear pass (with the closing quote required, each
# '"' in a body of escaped quotes would scan to the end of the body: quadratic).
_JSON_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET_RE = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class BadRequest(Exception):
    """A request the endpoint refuses with 400; the message names the field."""


class PurgeEndpoint:
    """An ASGI app that purges a ``RedisCache`` on authenticated requests.

    ``token`` is the shared secret clients send as ``Authorization: Bearer <token>``; it must
    be a non-empty string (``ConfigError`` otherwise). Use at least 16 random characters,
    e.g. ``secrets.token_urlsafe(32)``: the endpoint can empty the cache, so anyone who can
    guess the token can send every request to the origin.
    """

    def __init__(self, cache: RedisCache, *, token: str) -> None:
        if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"token must be a string of at least {MIN_TOKEN_LENGTH} characters")
        self.cache = cache
        self._token = token.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            # Websockets (or anything newer) have nothing to do here.
            await send({"type": "websocket.close", "code": 1008})
            return
        method: str = scope["method"]
        if method not in ALLOWED_METHODS:
            allow = [(b"allow", b"POST, PURGE")]
            await _respond(send, 405, {"error": "method not allowed"}, allow, head=method == "HEAD")
            return
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        if not self._authorised(headers):
            await _respond(send, 401, {}, [(b"www-authenticate", b"Bearer")])
            return
        try:
            if method == "PURGE":
                url = _url_from_scope(scope, headers)
                work = _Work(urls=[url])
            else:
                body = await _read_body(headers, receive)
                if body is None:
                    return  # the client went away
                if isinstance(body, int):
                    await _respond(send, 413, {"error": f"body: larger than {MAX_BODY} bytes"})
                    return
                work = _parse(body)
        except BadRequest as exc:
            await _respond(send, 400, {"error": str(exc)})
            return
        try:
            result = await work.run(self.cache)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            logger.warning("cache purge failed, redis unavailable: %s: %s", type(exc).__name__, exc)
            await _respond(send, 503, {"error": "redis unavailable"})
            return
        except ValueError as exc:  # pragma: no cover - values are checked before any purge
            await _respond(send, 400, {"error": str(exc)})
            return
        await _respond(send, 200, result)

    def _authorised(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        """Return whether the request carries the token; always runs the constant-time
        comparison, so a missing header costs the same as a wrong one."""
        values = [v for k, v in headers if k.lower() == b"authorization"]
        presented = b""
        well_formed = False
        if len(values) == 1:
            scheme, _, credentials = values[0].strip().partition(b" ")
            if scheme.lower() == b"bearer":
                presented = credentials.strip()
                well_formed = bool(presented)
        matches = hmac.compare_digest(presented, self._token)
        return matches and well_formed


def is_purge_request(scope: Scope, purge_path: str | None) -> bool:
    """Return whether the middleware should hand this request to the ``PurgeEndpoint``.

    True for an HTTP request with the method ``PURGE`` on any path, or with any method on
    ``purge_path`` (so that a ``GET`` there gets the endpoint's 405, not the app's page).
    """
    if scope.get("type") != "http":
        return False
    if scope.get("method") == "PURGE":
        return True
    return purge_path is not None and scope.get("path") == purge_path


class _Work:
    """What one request asked to purge, checked."""

    def __init__(
        self,
        *,
        urls: Sequence[str] = (),
        tags: Sequence[str] = (),
        prefixes: Sequence[tuple[str, str | None]] = (),
        clear: bool = False,
    ) -> None:
        self.urls = urls
        self.tags = tags
        self.prefixes = prefixes
        self.clear = clear

    async def run(self, cache: RedisCache) -> dict[str, object]:
        purged = 0
        for url in self.urls:
            purged += await cache.purge_url(url)
        if self.tags:
            purged += await cache.purge_tag(*self.tags)
        for path, host in self.prefixes:
            purged += await cache.purge_prefix(path, host=host)
        result: dict[str, object] = {"purged": purged}
        if self.clear:
            await cache.clear()
            result["cleared"] = True
        return result


def check_url(value: object, field: str) -> str:
    """Return an absolute http(s) URL, or raise ``BadRequest`` naming the field."""
    if not isinstance(value, str):
        raise BadRequest(f"{field}: expected a string, got {_type_name(value)}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadRequest(f"{field}: expected an absolute http(s) URL, got {_show(value)}")
    if "@" in parts.netloc:
        raise BadRequest(f"{field}: a URL with user info names no cached URL, got {_show(value)}")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise BadRequest(f"{field}: malformed port in {_show(value)}") from None
    return value


def check_prefix(value: object, field: str) -> tuple[str, str | None]:
    """Return ``(path prefix, host or None)`` for a path or absolute URL prefix, or raise
    ``BadRequest`` naming the field."""
    if not isinstance(value, str):
        raise BadRequest(f"{field}: expected a string, got {_type_name(value)}")
    if value.startswith("/"):
        if value.startswith("//"):
            raise BadRequest(f"{field}: a path must not start with '//', got {_show(value)}")
        if "?" in value or "#" in value:
            raise BadRequest(f"{field}: a prefix is a path, without query, got {_show(value)}")
        return value, None
    if not value.lower().startswith(("http://", "https://")):
        raise BadRequest(
            f"{field}: expected a path starting with '/' or an absolute http(s) URL, "
            f"got {_show(value)}"
        )
    url = check_url(value, field)
    parts = urlsplit(url)
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise BadRequest(f"{field}: a prefix is a path, without query, got {_show(value)}")
    # A URL's path is percent-encoded; the index holds paths decoded, as the app sees them.
    return unquote(parts.path) or "/", parts.netloc


def _check_list(data: dict[str, Any], name: str) -> list[object]:
    value = data.get(name, [])
    if not isinstance(value, list):
        raise BadRequest(f"{name}: expected a list of strings, got {_type_name(value)}")
    return value


class _Number:
    """A number in the body, kept as its text: no field takes one, so it is never converted
    (a 60 000-digit integer would cost quadratic time on Python 3.10, and fail on 3.11+)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _no_constant(name: str) -> object:
    raise BadRequest(f"body: {name} is not JSON")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:  # pragma: no branch - there is a duplicate
            if name in seen:
                raise BadRequest(f"{_show(name)}: duplicate field")
            seen.add(name)
    return data


def _check_depth(text: str) -> None:
    """Raise ``BadRequest`` if the JSON text nests arrays and objects deeper than
    ``MAX_DEPTH``; brackets inside strings do not count. Linear, and runs in C but for the
    ``max``: ``json.loads`` then never recurses deeper than ``MAX_DEPTH``.

    The count may be wrong only past a point where the text is already malformed (an
    unterminated string, an unmatched closing bracket), which the parser never goes past.
    """
    brackets = _NOT_BRACKET_RE.sub("", _JSON_STRING_RE.sub("", text))
    if brackets.count("[") + brackets.count("{") <= MAX_DEPTH:
        return
    if max(accumulate(map(_DEPTH_STEP.__getitem__, brackets))) > MAX_DEPTH:
        raise BadRequest(f"body: arrays and objects nested deeper than {MAX_DEPTH} levels")


def _check_text(value: object, field: str) -> object:
    """Return ``value``; raise ``BadRequest`` if it is a string with a lone surrogate (from a
    ``\\ud800`` escape): not Unicode text, so it names nothing that can be stored."""
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(f"{field}: a lone surrogate escape in {_show(value)}") from None
    return value


def _parse(body: bytes) -> _Work:
    try:
        # RFC 8259: JSON between systems is UTF-8 (json.loads would also take UTF-16 and 32).
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"body: malformed JSON (not UTF-8: {exc.reason} at byte {exc.start})"
        ) from None
    _check_depth(text)
    try:
        data = json.loads(
            text,
            object_pairs_hook=_object,
            parse_int=_Number,
            parse_float=_Number,
            parse_constant=_no_constant,
        )
    except ValueError as exc:  # JSONDecodeError
        raise BadRequest(f"body: malformed JSON ({exc})") from None
    except RecursionError:  # pragma: no cover - _check_depth keeps the parser shallow
        raise BadRequest("body: arrays and objects nested too deep") from None
    if not isinstance(data, dict):
        raise BadRequest(f"body: expected a JSON object, got {_type_name(data)}")
    for name in data:
        if name not in FIELDS:
            raise BadRequest(f"{_show(name)}: unknown field (expected {', '.join(FIELDS)})")
    urls = [
        check_url(_check_text(u, f"urls[{i}]"), f"urls[{i}]")
        for i, u in enumerate(_check_list(data, "urls"))
    ]
    tags: list[str] = []
    for i, tag in enumerate(_check_list(data, "tags")):
        if not isinstance(tag, str) or not tag:
            raise BadRequest(f"tags[{i}]: expected a non-empty string, got {_show(tag)}")
        _check_text(tag, f"tags[{i}]")
        tags.append(tag)
    prefixes = [
        check_prefix(_check_text(p, f"prefixes[{i}]"), f"prefixes[{i}]")
        for i, p in enumerate(_check_list(data, "prefixes"))
    ]
    clear = data.get("all", False)
    if not isinstance(clear, bool):
        raise BadRequest(f"all: expected true or false, got {_type_name(clear)}")
    return _Work(urls=urls, tags=tags, prefixes=prefixes, clear=clear)


def _url_from_scope(scope: Scope, headers: Sequence[tuple[bytes, bytes]]) -> str:
    """Return the absolute URL a request names: scheme, Host header, path, query string."""
    hosts = [v for k, v in headers if k.lower() == b"host"]
    if len(hosts) != 1:
        raise BadRequest("host: a PURGE request needs exactly one Host header")
    host = hosts[0].decode("latin-1").strip()
    if not _HOST_RE.match(host):
        raise BadRequest(f"host: malformed Host header {_show(host)}")
    scheme = scope.get("scheme", "http")
    if scheme not in ("http", "https"):
        raise BadRequest(f"scheme: cannot purge {_show(scheme)} URLs")
    # The path is decoded in the scope: quote it again, so that the URL parses back to it.
    url = f"{scheme}://{host}{quote(scope.get('path') or '/', safe=_PATH_SAFE)}"
    query: bytes = scope.get("query_string", b"")
    if query:
        # A raw "#" would end the URL; "%23" decodes to the same query parameter.
        url += "?" + query.decode("latin-1").replace("#", "%23")
    return url


async def _read_body(
    headers: Sequence[tuple[bytes, bytes]], receive: Receive
) -> bytes | int | None:
    """Return the body; an int (the bytes seen) if it is over ``MAX_BODY``; None if the client
    disconnected."""
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise BadRequest("content-length: not a number") from None
            if declared > MAX_BODY:
                return declared
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        if message["type"] != "http.request":  # pragma: no cover - not in the ASGI spec
            continue
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return size
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(
    send: Send,
    status: int,
    payload: dict[str, object],
    extra: Sequence[tuple[bytes, bytes]] = (),
    *,
    head: bool = False,
) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float, _Number)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__  # pragma: no cover - json.loads makes no other types


def _show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
