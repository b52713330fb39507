"""Hostile purge bodies (deep nesting and other bodies not of the expected shape) get a 400,
and CPU overload of the process does not open the circuit breaker.

To be merged into test_security.py; docs/security.md names these tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest
import redis.exceptions
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, RedisCache
from redis_cache_middleware._timeouts import pass_time
from redis_cache_middleware._types import Message
from redis_cache_middleware.breaker import CLOSED, LOOP_LAG_SHARE, OPEN, CircuitBreaker
from redis_cache_middleware.guard import SKIPPED, guarded, warn
from redis_cache_middleware.purge import MAX_BODY, MAX_DEPTH, PurgeEndpoint

from .conftest import RedisServer
from .helpers import PRODUCT_TIMEOUT, Origin, make_client, uvicorn_on_loopback

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "purge-token-0123456789abcdef"
#: 30 000 nested arrays: json.loads raised RecursionError on it, and the endpoint answered 500.
DEEP = b"[" * 30_000 + b"]" * 30_000


# -- the purge endpoint: bodies not of the expected shape ----------------------------------


async def call_endpoint(
    cache: RedisCache, body: bytes, chunk: int | None = None, headers: list[Any] | None = None
) -> tuple[int, dict[str, Any]]:
    """POST ``body`` to a ``PurgeEndpoint`` with raw ASGI messages (in ``chunk``-byte pieces
    when given); return the status and the decoded JSON answer."""
    step = chunk or max(len(body), 1)
    pieces = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    messages: list[Message] = [
        {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
        for i, piece in enumerate(pieces)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/_cache/purge",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {TOKEN}".encode()),
            (b"content-type", b"application/json"),
            *(headers or []),
        ],
    }
    await PurgeEndpoint(cache, token=TOKEN)(scope, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    answer = json.loads(sent[1]["body"])
    assert isinstance(answer, dict)
    return sent[0]["status"], answer


async def store_kept(client: httpx.AsyncClient) -> None:
    """Store ``/kept`` through the middleware: a purge that went through would remove it."""
    stored = await client.get("/kept")
    assert stored.headers["cache-status"].endswith("; stored")


#: ``(id, body, what the error must say)``. Most bodies also ask for ``"all": true``, so
#: that a 400 that purged anyway shows: the entry stored before must still be a hit.
BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("deep-arrays", DEEP, f"nested deeper than {MAX_DEPTH} levels"),
    ("deep-objects", b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "nested deeper"),
    ("deep-in-a-field", b'{"all": true, "urls": ' + DEEP + b"}", "nested deeper"),
    ("deep-unclosed", b'{"all": true, "tags": ' + b"[" * 60_000, "nested deeper"),
    ("not-an-object", b'[{"all": true}]', "body: expected a JSON object, got a list"),
    ("a-string", b'"all"', "body: expected a JSON object, got a string"),
    ("null", b"null", "body: expected a JSON object, got null"),
    ("empty", b"", "body: malformed JSON"),
    ("truncated", b'{"all": true', "body: malformed JSON"),
    ("trailing-data", b'{"all": true} {"all": true}', "body: malformed JSON (Extra data"),
    ("all-a-string", b'{"all": "true"}', "all: expected true or false, got a string"),
    ("all-a-number", b'{"all": 1}', "all: expected true or false, got a number"),
    ("urls-a-string", b'{"urls": "http://testserver/kept"}', "urls: expected a list"),
    ("url-a-number", b'{"all": true, "urls": [1]}', "urls[0]: expected a string"),
    ("tag-null", b'{"all": true, "tags": [null]}', "tags[0]: expected a non-empty string"),
    ("prefix-an-object", b'{"all": true, "prefixes": [{}]}', "prefixes[0]: expected a string"),
    ("unknown-field", b'{"all": true, "everything": true}', "unknown field"),
    ("not-utf-8", b'{"all": true, "tags": ["\xff"]}', "body: malformed JSON (not UTF-8: "),
    ("utf-16", '{"all": true}'.encode("utf-16"), "body: malformed JSON (not UTF-8: "),
    (
        "latin-1",
        '{"all": true, "tags": ["caf\xe9"]}'.encode("latin-1"),
        "body: malformed JSON (not UTF-8: ",
    ),
    ("lone-surrogate", b'{"all": true, "tags": ["\\ud800"]}', "tags[0]: a lone surrogate"),
    ("huge-integer", b'{"all": true, "tags": [' + b"9" * 60_000 + b"]}", "tags[0]: expected"),
    ("huge-float", b'{"all": true, "urls": [1e999999]}', "urls[0]: expected a string, got"),
    ("huge-all", b'{"all": ' + b"1" * 5_000 + b"}", "all: expected true or false, got a"),
    ("nan", b'{"all": true, "tags": [NaN]}', "body: NaN is not JSON"),
    ("infinity", b'{"all": Infinity}', "body: Infinity is not JSON"),
    ("minus-infinity", b'{"all": true, "tags": [-Infinity]}', "body: -Infinity is not JSON"),
    ("duplicate-field", b'{"all": false, "all": true}', "'all': duplicate field"),
    ("duplicate-nested", b'{"all": true, "urls": [{"a": 1, "a": 2}]}', "'a': duplicate field"),
    # Unterminated strings full of escaped quotes: linear to scan, and malformed.
    ("escaped-quotes", b'{"all": true, "tags": ["' + b'\\"' * 30_000, "body: malformed JSON"),
    ("brackets-in-string", b'{"all": true, "tags": ["' + b"[" * 60_000, "malformed JSON"),
]


@pytest.mark.parametrize(
    ("body", "error"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
async def test_purge_body_not_of_the_expected_shape_is_400_and_purges_nothing(
    cache: RedisCache, body: bytes, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert len(body) <= MAX_BODY
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        await store_kept(client)
        status, answer = await call_endpoint(cache, body)
        kept = await client.get("/kept")
    assert status == 400, answer
    assert list(answer) == ["error"] and error in answer["error"], answer
    assert len(answer["error"]) < 200  # the body is never echoed whole
    assert "; hit;" in kept.headers["cache-status"] and origin.calls["/kept"] == 1
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


async def test_brackets_inside_strings_do_not_count_as_nesting(cache: RedisCache) -> None:
    # A tag may be any string: brackets in it are text, not nesting, and the body is read.
    async with make_client(cache, Origin(), default_ttl=60) as client:
        await store_kept(client)
        status, answer = await call_endpoint(
            cache, json.dumps({"tags": ["[" * 1000, '{"[\\"'], "urls": []}).encode()
        )
        kept = await client.get("/kept")
    assert (status, answer) == (200, {"purged": 0})
    assert "; hit;" in kept.headers["cache-status"]


async def test_nesting_up_to_max_depth_reaches_the_field_checks(cache: RedisCache) -> None:
    # MAX_DEPTH levels are parsed (and refused for their type, naming the field); one more
    # is refused before parsing. The object and the list of tags are 2 of the levels.
    inner = "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)
    status, answer = await call_endpoint(cache, f'{{"tags": [{inner}]}}'.encode())
    shown = repr(json.loads(inner))
    assert (status, answer) == (
        400,
        {"error": f"tags[0]: expected a non-empty string, got {shown}"},
    )
    status, answer = await call_endpoint(cache, f'{{"tags": [[{inner}]]}}'.encode())
    assert (status, answer) == (
        400,
        {"error": f"body: arrays and objects nested deeper than {MAX_DEPTH} levels"},
    )


async def test_purge_body_over_the_limit_is_413_however_it_is_sent(cache: RedisCache) -> None:
    origin = Origin()
    body = b'{"all": true, "tags": ["' + b"x" * MAX_BODY + b'"]}'
    async with make_client(cache, origin, default_ttl=60) as client:
        await store_kept(client)
        # Sent in 1 KiB pieces with no Content-Length, then with one that lies (small).
        unsized = await call_endpoint(cache, body, chunk=1024)
        lying = await call_endpoint(cache, body, chunk=1024, headers=[(b"content-length", b"20")])
        declared = await call_endpoint(
            cache, b"{}", headers=[(b"content-length", str(MAX_BODY + 1).encode())]
        )
        kept = await client.get("/kept")
    for status, answer in (unsized, lying, declared):
        assert (status, answer) == (413, {"error": f"body: larger than {MAX_BODY} bytes"})
    assert "; hit;" in kept.headers["cache-status"] and origin.calls["/kept"] == 1


# -- the same through a real uvicorn ---------------------------------------------------------


def purge_app() -> Starlette:
    """The app ``uvicorn_purge`` serves (``--factory``): the middleware, with the purge
    endpoint on ``/_cache/purge``, in front of a page that says how often it was called."""
    calls = {"n": 0}

    async def page(request: Request) -> Response:
        calls["n"] += 1
        return Response(f"call={calls['n']}", headers={"cache-control": "max-age=60"})

    cache = RedisCache.from_url(os.environ["REDIS_URL"], namespace=os.environ["E2E_NAMESPACE"])
    app = Starlette(routes=[Route("/page", page)])
    app.add_middleware(CacheMiddleware, cache=cache, purge_token=TOKEN)
    return app


@pytest.fixture
def uvicorn_purge(
    redis_server: RedisServer, namespace: str, tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    """A uvicorn on loopback serving ``purge_app``; yields its URL and the file its
    stderr (its log, at warning level and above) goes to."""
    log = tmp_path / "uvicorn.log"
    with (
        log.open("wb") as stderr,
        uvicorn_on_loopback(
            f"{__name__}:purge_app",
            redis_url=redis_server.url,
            namespace=namespace,
            probe="/page",
            args=["--factory"],
            stderr=stderr,
        ) as base,
    ):
        yield base, log


def test_uvicorn_deeply_nested_purge_body_is_400_and_the_server_goes_on(
    uvicorn_purge: tuple[str, Path],
) -> None:
    base, log = uvicorn_purge
    auth = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    with httpx.Client(base_url=base, timeout=5) as client:
        first = client.get("/page")  # stored (the fixture's GET was the miss that filled)
        deep = client.post("/_cache/purge", content=DEEP, headers=auth)
        after = client.get("/page")
        purge = client.post("/_cache/purge", json={"urls": [f"{base}/page"]}, headers=auth)
    assert "; hit;" in first.headers["cache-status"]
    assert deep.status_code == 400
    assert deep.json() == {
        "error": f"body: arrays and objects nested deeper than {MAX_DEPTH} levels"
    }
    # The server still answers, from the cache: nothing was purged.
    assert after.status_code == 200 and "; hit;" in after.headers["cache-status"]
    assert after.content == first.content
    assert purge.status_code == 200 and purge.json() == {"purged": 1}
    # Nothing logged: no "Exception in ASGI application", no traceback.
    assert log.read_text() == ""


# -- CPU overload and the circuit breaker ----------------------------------------------------


#: CPU work per request of the overloaded app: a wave of 20 concurrent misses blocks the
#: loop for 20 x 10 ms in all, past the 100 ms timeout of the Redis calls in flight.
CPU_SECONDS = 0.01
#: Waves of 20 requests; each wave's Redis calls time out by the dozen (60 in 3 waves is
#: typical, the breaker's threshold is 5).
WAVES = 3


def cpu_bound_app() -> Starlette:
    async def page(request: Request) -> Response:
        # CPU work in the event loop's thread (rendering, JSON ...): blocking, on purpose.
        time.sleep(CPU_SECONDS)  # noqa: ASYNC251
        return Response(b"x" * 100, headers={"cache-control": "max-age=60"})

    return Starlette(routes=[Route("/{path:path}", page)])


@pytest.mark.parametrize("backend", ["fakeredis", "redis"])
async def test_cpu_overload_of_the_loop_does_not_open_the_breaker(
    cache: RedisCache, caplog: pytest.LogCaptureFixture
) -> None:
    """Waves of 20 concurrent distinct-URL misses, each one's app blocking the loop 10 ms,
    while a task blocks it 300 ms: Redis calls in flight time out only because the loop did
    not look. Redis is healthy, so the breaker must stay closed and the cache on."""
    warn.reset()  # rate-limited per process: another test may have just warned
    app = cpu_bound_app()
    app.add_middleware(CacheMiddleware, cache=cache, timeout=PRODUCT_TIMEOUT)
    transport = httpx.ASGITransport(app=app)
    responses: list[httpx.Response] = []

    async def hog() -> None:
        await asyncio.sleep(0.01)  # the wave's lookups are in flight
        time.sleep(0.3)  # noqa: ASYNC251 - blocks the loop, on purpose

    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await client.get("/warm")  # connections made
        for wave in range(WAVES):
            got = await asyncio.gather(hog(), *(client.get(f"/w{wave}/{i}") for i in range(20)))
            responses += [r for r in got if r is not None]
        timed_out = cache.stats.redis_error
        # Redis is fine and the cache still works: a stored page is a hit.
        await client.get("/after")
        after = await client.get("/after")
    assert len(responses) == 20 * WAVES and all(r.status_code == 200 for r in responses)
    # The overload was real: many calls timed out, several times the breaker's threshold.
    assert timed_out >= 3 * cache.breaker.threshold, cache.stats.snapshot()
    assert cache.breaker.state == CLOSED and cache.breaker.opened == 0
    assert cache.stats.breaker_transitions == {} and cache.stats.breaker_skipped == 0
    # Most timeouts were put down to the loop; any others were too few in a row to open it.
    assert cache.stats.loop_lag >= 3 * cache.breaker.threshold
    assert "; hit;" in after.headers["cache-status"]
    messages = [r.getMessage() for r in caplog.records]
    assert not any("circuit breaker" in m for m in messages)
    assert any("event loop" in m for m in messages)


class Readings:
    """A clock that returns the given readings in turn, for ``CircuitBreaker.loop_lag``: it
    reads the time when it handles the timeout, then twice around one pass of the loop."""

    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)

    def __call__(self) -> float:
        return self.readings.pop(0)


def handled(at: float, one_pass: float = 0.0) -> tuple[float, float, float]:
    """The readings of a timeout handled at ``at``, when one pass round the loop takes
    ``one_pass``."""
    return at, at, at + one_pass


async def test_pass_time_is_how_long_one_pass_round_the_loop_takes() -> None:
    assert await pass_time(Readings(100.0, 100.25)) == 0.25
    # On the real loop, idle: far under a millisecond.
    assert await pass_time() < 0.05


@pytest.mark.parametrize(
    ("exc", "at", "one_pass", "excused"),
    [
        # Our timeout (deadline 100.1), handled 60 ms late: over half of 100 ms.
        (asyncio.TimeoutError(), 100.16, 0.0, True),
        # ... 40 ms late: under the share, a Redis failure.
        (asyncio.TimeoutError(), 100.14, 0.0, False),
        # On time, but a pass round the loop takes 60 ms (or only 40 ms).
        (asyncio.TimeoutError(), 100.1, 0.06, True),
        (asyncio.TimeoutError(), 100.1, 0.04, False),
        # redis-py's own socket timeout, before our deadline, on a slow loop (or not).
        (redis.exceptions.TimeoutError("Timeout reading"), 100.05, 0.06, True),
        (redis.exceptions.TimeoutError("Timeout reading"), 100.05, 0.0, False),
        # Not a timeout: always a Redis failure, however late the loop.
        (redis.exceptions.ConnectionError("Connection refused"), 100.5, 0.5, False),
        (OSError("Network unreachable"), 100.5, 0.5, False),
    ],
)
async def test_breaker_puts_a_timeout_down_to_the_loop_only_when_it_lagged(
    exc: Exception, at: float, one_pass: float, excused: bool
) -> None:
    breaker = CircuitBreaker(threshold=1, clock=Readings(*handled(at, one_pass)))
    lag = await breaker.loop_lag(exc, 100.0, 0.1)
    assert (lag is not None) == excused
    if lag is not None:
        assert lag == pytest.approx(max(at - 100.1, one_pass))
    # Only asked, nothing recorded: the caller records a failure when it is not excused.
    assert breaker.state == CLOSED and breaker.failures == 0


async def test_a_stall_excuses_the_timeouts_of_the_calls_it_overlapped() -> None:
    # Calls of 100 ms. The first, from 100.0, is handled at 100.3: the loop stalled from its
    # deadline (100.1) or before, to 100.3. Calls in flight then time out later, on time,
    # their answers unread through the part of their window in the stall.
    timeout = 0.1
    breaker = CircuitBreaker(
        clock=Readings(
            *handled(100.3),
            *handled(100.33),  # from 100.22 to 100.32: 80 ms in the stall
            *handled(100.37),  # from 100.26 to 100.36: 40 ms in it, under half
            *handled(101.11),  # from 101.0, on an idle loop: Redis's
        )
    )
    assert await breaker.loop_lag(asyncio.TimeoutError(), 100.0, timeout) == pytest.approx(0.2)
    assert await breaker.loop_lag(asyncio.TimeoutError(), 100.22, timeout) == pytest.approx(0.08)
    assert await breaker.loop_lag(asyncio.TimeoutError(), 100.26, timeout) is None
    assert await breaker.loop_lag(asyncio.TimeoutError(), 101.0, timeout) is None


async def test_timeouts_on_an_idle_loop_never_add_up_to_a_stall() -> None:
    # A real outage under load: a timeout every millisecond, each handled 1 ms late, each
    # pass round the loop 1 ms. None is excused, however long it goes on.
    timeout = 0.1
    starts = [100.0 + i / 1000 for i in range(500)]
    readings = [r for start in starts for r in handled(start + timeout + 0.001, 0.001)]
    breaker = CircuitBreaker(clock=Readings(*readings))
    for start in starts:
        assert await breaker.loop_lag(asyncio.TimeoutError(), start, timeout) is None


async def test_a_timeout_on_a_late_loop_is_not_a_breaker_failure() -> None:
    """``guarded`` with calls that fail in each way: a timeout handled well past its deadline
    (the loop was blocked) is counted but not held against Redis; a timeout on time and a
    refused connection are breaker failures, as before."""
    cache = RedisCache(fakeredis.FakeAsyncRedis(), namespace="lag")
    timeout = 0.02
    blocked = timeout * 3  # the deadline fires 40 ms late: twice the timeout
    assert blocked - timeout > timeout * LOOP_LAG_SHARE

    async def late() -> None:
        time.sleep(blocked)  # noqa: ASYNC251 - the loop is blocked past the deadline...
        await asyncio.sleep(10)  # ...then the call waits, as for Redis: the timeout fires

    async def no_answer() -> None:
        await asyncio.sleep(10)  # the loop is idle; Redis does not answer

    async def refused() -> None:
        raise redis.exceptions.ConnectionError("Connection refused")

    breaker = cache.breaker
    breaker.failures = breaker.threshold - 1  # one more failure opens it
    for _ in range(3):
        assert await guarded(cache, timeout, "lookup", late) is SKIPPED
    # Not a failure, and not a success either: the count of failures is kept.
    assert breaker.state == CLOSED and breaker.failures == breaker.threshold - 1
    assert (cache.stats.redis_error, cache.stats.loop_lag) == (3, 3)
    assert await guarded(cache, PRODUCT_TIMEOUT, "lookup", no_answer) is SKIPPED
    assert breaker.state == OPEN and breaker.opened == 1
    breaker.success()  # closed again (a probe that worked)
    breaker.failures = breaker.threshold - 1
    assert await guarded(cache, 10.0, "lookup", refused) is SKIPPED
    assert breaker.state == OPEN and breaker.opened == 2
    assert (cache.stats.redis_error, cache.stats.loop_lag) == (5, 3)
