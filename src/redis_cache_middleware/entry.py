"""The stored response and its codec to and from the fields of a Redis hash; pure.

An entry hash holds, under a schema version ``v``: ``status``, ``headers`` (msgpack list of
``[name, value]`` byte pairs, in the order the app sent them, duplicates kept), ``body``,
``stored_at`` (POSIX seconds), ``fresh_for``, ``stale_for`` (kept past freshness), ``swr``
and ``sie`` (the RFC 5861 windows) in seconds, ``age0`` (the Age
the app reported), ``auth`` (may answer requests with Authorization) and ``tags``. Numbers are
decimal ASCII so that ``redis-cli HGETALL`` stays readable.

A URL whose responses vary keeps a *marker* at its key instead: ``v`` and ``vary``, the
msgpack list of the lowercase request header names the variants are keyed on.

``decode`` never raises: anything that is not a well-formed record of this schema version
(garbage, a missing field, another version, a body whose length disagrees) is None, a miss.
Nor does it hand back anything a server could not send as is: an entry is refused when a
header name is not a lowercase RFC 9110 token, a value holds a control character other than
HTAB (CR, LF, NUL...), the status is not a final one (200-599), ``Content-Length`` comes
twice, or it carries a hop-by-hop framing field (which we never store); a marker is refused
when a Vary name is not a token. Such a record was written by someone else (or damaged), and
replaying it would break the client's connection; as a miss, the next store overwrites it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgpack

from ._msgpack import packb
from ._types import RawHeaders

SCHEMA_VERSION = b"1"

F_VERSION = b"v"
F_STATUS = b"status"
F_HEADERS = b"headers"
F_BODY = b"body"
F_STORED_AT = b"stored_at"
F_FRESH_FOR = b"fresh_for"
F_STALE_FOR = b"stale_for"
F_SWR = b"swr"
F_SIE = b"sie"
F_INITIAL_AGE = b"age0"
F_AUTH = b"auth"
F_TAGS = b"tags"
F_VARY = b"vary"
F_VARY_REQUEST = b"varyreq"

#: Request header values never written to Redis, even when a response varies on them.
REDACTED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
REDACTED = b"<redacted>"

#: The bytes of a stored header name: RFC 9110 5.6.2 ``tchar``, lowercase (names are stored
#: lowercased); and of a value: VCHAR, obs-text, SP and HTAB (RFC 9110 5.5).
_NAME_BYTES = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
_VALUE_BYTES = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
#: ``bytes.translate`` tables that map each of those bytes to 1 and every other byte to 0: a 0
#: in the translated names (values) is a byte no server may send (a C loop and a memchr).
_NAME_TABLE = bytes(int(b in _NAME_BYTES) for b in range(256))
_VALUE_TABLE = bytes(int(b in _VALUE_BYTES) for b in range(256))
_VARY_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
#: Fields that frame one connection: never stored (forward.HOP_BY_HOP drops them), so an entry
#: holding one is not ours.
NEVER_STORED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


@dataclass(frozen=True, slots=True)
class CachedEntry:
    """A stored response: what is replayed, and the numbers that say for how long."""

    status: int
    headers: RawHeaders
    body: bytes
    stored_at: float
    fresh_for: float
    stale_for: float = 0.0
    initial_age: float = 0.0
    #: Seconds past freshness it may be served while refreshed, or instead of an error.
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    shared_with_auth: bool = False
    tags: tuple[str, ...] = field(default=())
    #: The varying request headers and this variant's values of them (for inspection;
    #: credentials are redacted). Empty for a URL that does not vary.
    request_vary: tuple[tuple[str, bytes | None], ...] = field(default=())

    def age(self, now: float) -> float:
        """Return the entry's current age in seconds (RFC 9111 4.2.3)."""
        return self.initial_age + max(0.0, now - self.stored_at)


@dataclass(frozen=True, slots=True)
class VaryMarker:
    """Stands at a URL's key when its responses vary: the names its variants are keyed on."""

    names: tuple[str, ...]


def encode_number(value: float) -> bytes:
    """Return a number field as stored (``repr``, so that decoding and encoding again gives
    the same bytes)."""
    return repr(float(value)).encode()


def encode(entry: CachedEntry) -> dict[bytes, bytes]:
    """Return the hash fields that store an entry."""
    return {
        F_VERSION: SCHEMA_VERSION,
        F_STATUS: str(entry.status).encode(),
        F_HEADERS: packb([[n, v] for n, v in entry.headers]),
        F_BODY: entry.body,
        F_STORED_AT: encode_number(entry.stored_at),
        F_FRESH_FOR: encode_number(entry.fresh_for),
        F_STALE_FOR: encode_number(entry.stale_for),
        F_SWR: encode_number(entry.stale_while_revalidate),
        F_SIE: encode_number(entry.stale_if_error),
        F_INITIAL_AGE: encode_number(entry.initial_age),
        F_AUTH: b"1" if entry.shared_with_auth else b"0",
        F_TAGS: packb(list(entry.tags)),
        F_VARY_REQUEST: packb(
            [
                [n, REDACTED if n in REDACTED_HEADERS and v is not None else v]
                for n, v in entry.request_vary
            ],
        ),
    }


def encode_marker(marker: VaryMarker) -> dict[bytes, bytes]:
    """Return the hash fields that store a Vary marker."""
    return {
        F_VERSION: SCHEMA_VERSION,
        F_VARY: packb(list(marker.names)),
    }


def _float(raw: bytes) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError("not finite")
    return value


def _headers(raw: bytes) -> RawHeaders:
    # Arrays as tuples: each pair comes out as the (name, value) tuple we hand back.
    items = msgpack.unpackb(raw, raw=True, use_list=False, strict_map_key=True)
    if type(items) is not tuple:
        raise ValueError("headers")
    if not items:
        return []
    for item in items:
        if type(item) is not tuple or len(item) != 2:
            raise ValueError("header pair")
    names, values = zip(*items, strict=False)  # every pair is two long: checked above
    # join raises TypeError for a name or value that is not bytes (msgpack gives no other
    # bytes-like type); this runs on every hit, hence whole-list checks rather than a loop.
    if not _sendable(names, values) or not NEVER_STORED.isdisjoint(names):
        raise ValueError("header fields a server could not send")
    return list(items)


def _sendable(names: tuple[bytes, ...], values: tuple[bytes, ...]) -> bool:
    return not (
        not all(names)
        or 0 in b"".join(names).translate(_NAME_TABLE)
        or 0 in b"".join(values).translate(_VALUE_TABLE)
        or names.count(b"content-length") > 1
    )


def is_sendable(headers: RawHeaders) -> bool:
    """Return whether response headers (names lowercased) pass ``decode``'s field checks:
    token names, values without control characters but HTAB, at most one
    ``Content-Length``. Headers that do not would be stored only to be read as damaged.
    (Framing fields, which ``decode`` also refuses, are dropped before a store.)"""
    if not headers:
        return True
    names, values = zip(*headers, strict=True)
    return _sendable(names, values)


def _strings(raw: bytes) -> tuple[str, ...]:
    items = msgpack.unpackb(raw, raw=False, use_list=True)
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ValueError("strings")
    return tuple(items)


def decode(fields: Mapping[bytes, bytes]) -> CachedEntry | VaryMarker | None:
    """Return the entry or marker the hash fields hold, or None if they hold neither."""
    try:
        if fields.get(F_VERSION) != SCHEMA_VERSION:
            return None
        vary = fields.get(F_VARY)
        if vary is not None:
            names = _strings(vary)
            if list(names) != sorted(set(names)) or not all(map(_VARY_NAME.fullmatch, names)):
                return None
            return VaryMarker(names=names)
        status = int(fields[F_STATUS])
        if not 200 <= status <= 599:
            return None
        body = fields[F_BODY]
        if not isinstance(body, bytes):
            return None
        stored_at = _float(fields[F_STORED_AT])
        fresh_for = _float(fields[F_FRESH_FOR])
        stale_for = _float(fields[F_STALE_FOR])
        initial_age = _float(fields[F_INITIAL_AGE])
        swr = _float(fields.get(F_SWR, b"0"))
        sie = _float(fields.get(F_SIE, b"0"))
        if min(fresh_for, stale_for, initial_age, swr, sie) < 0:
            return None
        headers = _headers(fields[F_HEADERS])
        if not _length_agrees(headers, len(body)):
            return None
        return CachedEntry(
            status=status,
            headers=headers,
            body=body,
            stored_at=stored_at,
            fresh_for=fresh_for,
            stale_for=stale_for,
            initial_age=initial_age,
            stale_while_revalidate=swr,
            stale_if_error=sie,
            shared_with_auth=fields[F_AUTH] == b"1",
            tags=_strings(fields[F_TAGS]),
            request_vary=_request_vary(fields.get(F_VARY_REQUEST)),
        )
    except Exception:
        return None


def _request_vary(raw: bytes | None) -> tuple[tuple[str, bytes | None], ...]:
    if raw is None:
        return ()
    items = msgpack.unpackb(raw, raw=False, use_list=True)
    out: list[tuple[str, bytes | None]] = []
    for item in items:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not (item[1] is None or isinstance(item[1], bytes))
        ):
            raise ValueError("varyreq")
        out.append((item[0], item[1]))
    return tuple(out)


def _length_agrees(headers: RawHeaders, body_length: int) -> bool:
    for name, value in headers:
        if name == b"content-length":
            return value.strip() == str(body_length).encode()
    return True
