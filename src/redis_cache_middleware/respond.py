"""What the client is sent when the cache answers, and every ``Cache-Status`` value
(RFC 9211) the middleware writes.

``replay`` sends a stored entry (or a 304 to the client's own validators), ``replay_range``
a part of one to a GET with ``Range``; the ``*_status`` functions spell the ``Cache-Status``
of each kind of answer: a hit, a fill collapsed into another's, a forward to the app, a stale
stand-in for an error.

May call: ``policy`` (conditional requests), ``ranges``. No Redis, no app.
"""

from __future__ import annotations

import asyncio

from . import policy, ranges
from ._types import Message, Receive, Send
from .admit import Request
from .entry import CachedEntry


async def replay(
    entry: CachedEntry,
    age: float,
    request: Request,
    cache_status: str,
    send: Send,
) -> None:
    """Send a stored response: its headers as stored, plus ``Age`` and ``Cache-Status``.

    A client whose ``If-None-Match`` / ``If-Modified-Since`` matches gets a 304 with the
    headers RFC 9110 15.4.5 asks for.
    """
    age_seconds = int(age)
    if request.is_conditional and policy.is_not_modified(
        request.if_none_match, request.if_modified_since, entry.headers, entry.stored_at
    ):
        status = 304
        headers = policy.get_not_modified_headers(entry.headers)
        body = b""
    else:
        status = entry.status
        headers = list(entry.headers)
        body = b"" if request.method == "HEAD" else entry.body
    headers.append((b"age", str(age_seconds).encode()))
    headers.append((b"cache-status", cache_status.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def replay_range(
    entry: CachedEntry,
    age: float,
    request: Request,
    cache_status: str,
    send: Send,
) -> None:
    """Send a stored response to a request with ``Range`` (RFC 9110 14).

    One satisfiable ``bytes`` range of a stored 200 is sent as a 206 with the stored
    headers, its ``Content-Range`` and the part's ``Content-Length`` (RFC 9110 15.3.7); an
    unsatisfiable one as a 416 with ``Content-Range: bytes */length`` (15.5.17). Everything
    else is what ``replay`` sends: a 304 when the client's validators match (Range is
    evaluated only where the answer would be a 200, RFC 9110 14.2), a HEAD (GET is the only
    method with range handling, so a HEAD ignores Range), a status other than 200, and a
    Range that ``ranges.select`` ignores (several ranges, junk, an If-Range that does not
    hold): the whole response.
    """
    value = request.range
    body = entry.body
    chosen: ranges.Part | ranges.Whole = ranges.Whole.FULL
    if (
        value is not None
        and request.method == "GET"
        and entry.status == 200
        and not (
            request.is_conditional
            and policy.is_not_modified(
                request.if_none_match, request.if_modified_since, entry.headers, entry.stored_at
            )
        )
    ):
        if_range = [v for k, v in request.headers if k == b"if-range"]
        chosen = ranges.select(value, if_range, entry.headers, entry.stored_at, len(body))
    if chosen is ranges.Whole.FULL:
        await replay(entry, age, request, cache_status, send)
        return
    if isinstance(chosen, ranges.Part):
        status = 206
        length = str(chosen.length).encode()
        headers = [(k, length if k == b"content-length" else v) for k, v in entry.headers]
        if not any(k == b"content-length" for k, _ in headers):
            headers.append((b"content-length", length))
        headers.append((b"content-range", chosen.content_range(len(body))))
        part = body[chosen.first : chosen.last + 1]
    else:
        status = 416
        headers = [
            (b"content-range", ranges.unsatisfied_range(len(body))),
            (b"content-length", b"0"),
        ]
        part = b""
    headers.append((b"age", str(int(age)).encode()))
    headers.append((b"cache-status", cache_status.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": part})


async def refuse_only_if_cached(name: str, fwd: str, send: Send) -> None:
    """Answer 504: nothing usable is stored and the client will not wait for the origin
    (``Cache-Control: only-if-cached``, RFC 9111 5.2.1.7)."""
    refused = f"{name}; fwd={fwd}; detail=only-if-cached".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 504,
            "headers": [(b"content-length", b"0"), (b"cache-status", refused)],
        }
    )
    await send({"type": "http.response.body", "body": b""})


def hit_status(name: str, entry: CachedEntry, age: float, extra: str = "") -> str:
    """Return the ``Cache-Status`` of a response served from the cache."""
    return f"{name}; hit; ttl={int(entry.fresh_for) - int(age)}{extra}"


def collapsed_status(name: str, fwd: str, entry: CachedEntry, age: float) -> str:
    """Return the ``Cache-Status`` of a response another request's fill produced."""
    ttl = int(entry.fresh_for) - int(age)
    return f"{name}; fwd={fwd}; fwd-status={entry.status}; collapsed; ttl={ttl}"


def forward_status(
    name: str, fwd: str, status: int, extra: str, *, stored: bool, detail: str | None
) -> bytes:
    """Return the ``Cache-Status`` of a response the app produced: ``stored``, or why not."""
    value = f"{name}; fwd={fwd}; fwd-status={status}{extra}"
    if stored:
        value += "; stored"
    elif detail:
        value += f"; detail={detail}"
    return value.encode()


def stale_if_error_status(name: str, why: str, detail: str = "stale-if-error") -> str:
    """Return the ``Cache-Status`` of a stale entry standing in for the app's failure: ``why``
    is the error status the app answered, or ``error`` when it raised; ``detail`` says what
    allowed it (``stale-if-error``, or ``stale-on-error`` for ``stale_on_error_grace``)."""
    if why == "error":
        return f"{name}; hit; fwd=stale; detail={detail}"
    return f"{name}; hit; fwd=stale; fwd-status={why}; detail={detail}"


async def discard(message: Message) -> None:
    """A ``send`` for background refreshes: the response goes only to the cache."""


def empty_receive() -> Receive:
    """Return a ``receive`` that gives an empty body, then waits until cancelled."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}  # pragma: no cover - never reached

    return receive
