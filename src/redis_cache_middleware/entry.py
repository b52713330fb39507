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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgpack

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
        F_HEADERS: msgpack.packb([[n, v] for n, v in entry.headers], use_bin_type=True),
        F_BODY: entry.body,
        F_STORED_AT: encode_number(entry.stored_at),
        F_FRESH_FOR: encode_number(entry.fresh_for),
        F_STALE_FOR: encode_number(entry.stale_for),
        F_SWR: encode_number(entry.stale_while_revalidate),
        F_SIE: encode_number(entry.stale_if_error),
        F_INITIAL_AGE: encode_number(entry.initial_age),
        F_AUTH: b"1" if entry.shared_with_auth else b"0",
        F_TAGS: msgpack.packb(list(entry.tags), use_bin_type=True),
        F_VARY_REQUEST: msgpack.packb(
            [
                [n, REDACTED if n in REDACTED_HEADERS and v is not None else v]
                for n, v in entry.request_vary
            ],
            use_bin_type=True,
        ),
    }


def encode_marker(marker: VaryMarker) -> dict[bytes, bytes]:
    """Return the hash fields that store a Vary marker."""
    return {
        F_VERSION: SCHEMA_VERSION,
        F_VARY: msgpack.packb(list(marker.names), use_bin_type=True),
    }


def _float(raw: bytes) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError("not finite")
    return value


def _headers(raw: bytes) -> RawHeaders:
    items = msgpack.unpackb(raw, raw=True, use_list=True, strict_map_key=True)
    if not isinstance(items, list):
        raise ValueError("headers")
    headers: RawHeaders = []
    for item in items:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], bytes)
            or not isinstance(item[1], bytes)
        ):
            raise ValueError("header pair")
        headers.append((item[0], item[1]))
    return headers


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
            return VaryMarker(names=names) if list(names) == sorted(set(names)) else None
        status = int(fields[F_STATUS])
        if not 100 <= status <= 999:
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
