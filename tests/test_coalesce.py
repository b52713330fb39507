"""Request coalescing: one app call per cold URL, in one process and across processes."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from starlette.responses import Response

from redis_cache_middleware import CacheMiddleware, RedisCache, coalesce, keys
from redis_cache_middleware._redis.lane import Lane
from redis_cache_middleware.cache import FillLock
from redis_cache_middleware.coalesce import POLL_CAP, Fills
from redis_cache_middleware.config import CacheConfig
from redis_cache_middleware.forward import Outcome

from .conftest import RedisServer
from .helpers import Origin, Spec, http_scope, make_client, uvicorn_on_loopback

if sys.version_info >= (3, 11):
    from asyncio import timeout as deadline
else:  # pragma: no cover - Python 3.10
    from async_timeout import timeout as deadline

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent


class SlowOrigin(Origin):
    """An origin whose handler takes ``delay`` seconds."""

    def __init__(self, delay: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delay = delay

    async def respond(self, request: Any) -> Any:
        await asyncio.sleep(self.delay)
        return await super().respond(request)


async def test_200_concurrent_misses_one_app_call(cache: RedisCache) -> None:
    origin = SlowOrigin(0.2)
    # A second for Redis (not 100 ms): 200 connections opening at once on a loaded machine
    # must not turn the lookups this test counts into fail-open misses.
    async with make_client(cache, origin, default_ttl=60, timeout=1.0) as client:
        responses = await asyncio.gather(*(client.get("/cold") for _ in range(200)))
    assert origin.calls["/cold"] == 1
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    statuses = [r.headers["cache-status"] for r in responses]
    assert sum("stored" in s for s in statuses) == 1
    assert sum("collapsed" in s for s in statuses) == 199
    assert cache.stats.collapsed == 199


async def test_variants_are_not_collapsed_into_each_other(cache: RedisCache) -> None:
    origin = SlowOrigin(
        0.1, specs={"/v": Spec(headers=[("vary", "x-lang")], echo_headers=("x-lang",))}
    )
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/v", headers={"x-lang": "warm"})  # learn the Vary
        responses = await asyncio.gather(
            *(client.get("/v", headers={"x-lang": lang}) for lang in ["en", "fr"] * 10)
        )
    for r in responses:
        lang = r.request.headers["x-lang"]
        assert f"x-lang={lang}".encode() in r.content
    assert origin.calls["/v"] == 3


async def test_coalescing_off_calls_app_for_each(cache: RedisCache) -> None:
    origin = SlowOrigin(0.05)
    async with make_client(cache, origin, default_ttl=60, coalesce=False) as client:
        await asyncio.gather(*(client.get("/each") for _ in range(10)))
    assert origin.calls["/each"] == 10


async def test_not_storable_fill_releases_waiters_and_remembers_pass(
    cache: RedisCache, redis_client: Any
) -> None:
    origin = SlowOrigin(0.2, specs={"/nostore": Spec(headers=[("cache-control", "no-store")])})
    async with make_client(cache, origin, default_ttl=60) as client:
        started = time.monotonic()
        responses = await asyncio.gather(*(client.get("/nostore") for _ in range(10)))
        elapsed = time.monotonic() - started
        base = keys.url_key(
            cache.namespace, 0, cache.url_hash("http", b"testserver", "/nostore", b"")
        )
        assert await redis_client.exists(keys.pass_key(base)) == 1
        # Hit-for-pass: the next burst is not serialised behind a lock at all.
        started = time.monotonic()
        await asyncio.gather(*(client.get("/nostore") for _ in range(10)))
        second = time.monotonic() - started
    assert {r.status_code for r in responses} == {200}
    assert origin.calls["/nostore"] == 20
    # One fill (0.2 s), then every waiter went to the app in parallel: not 10 x 0.2 s.
    assert elapsed < 1.0
    assert second < 0.6


class ConditionalOrigin(SlowOrigin):
    """A slow origin whose documents carry ``ETag: "v1"``, answered 304 to a match."""

    async def respond(self, request: Any) -> Any:
        if request.headers.get("if-none-match") == '"v1"':
            self.calls[request.url.path] += 1
            await asyncio.sleep(self.delay)
            return Response(status_code=304, headers={"etag": '"v1"'})
        return await super().respond(request)


def _pass_key(cache: RedisCache, path: str) -> str:
    uhash = cache.url_hash("http", b"testserver", path, b"")
    return keys.pass_key(keys.url_key(cache.namespace, 0, uhash))


async def test_304_to_a_clients_validators_does_not_mark_hit_for_pass(
    cache: RedisCache, redis_client: Any
) -> None:
    # A browser revalidating what it saw before a purge: a cold URL, a conditional GET. The
    # app's 304 is not stored, but it says nothing of whether the document is storable.
    origin = ConditionalOrigin(
        0.2, specs={"/doc": Spec(headers=[("etag", '"v1"'), ("cache-control", "max-age=60")])}
    )
    async with (
        make_client(cache, origin) as one,
        make_client(cache, origin) as two,
        make_client(cache, origin) as three,
    ):
        conditional = await one.get("/doc", headers={"if-none-match": '"v1"'})
        assert conditional.status_code == 304
        assert "detail=status" in conditional.headers["cache-status"]
        assert await redis_client.exists(_pass_key(cache, "/doc")) == 0
        # Three middlewares stand for three processes: with hit-for-pass set, each would
        # have gone to the app; coalescing across them makes it one call.
        origin.calls.clear()
        responses = await asyncio.gather(
            *(client.get("/doc") for client in (one, two, three) for _ in range(10))
        )
    assert {r.status_code for r in responses} == {200}
    assert origin.calls["/doc"] == 1
    assert sum("collapsed" in r.headers["cache-status"] for r in responses) == 29


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_error_status_does_not_mark_hit_for_pass(
    cache: RedisCache, redis_client: Any, status: int
) -> None:
    origin = Origin(specs={"/down": Spec(status=status)})
    async with make_client(cache, origin, default_ttl=60) as client:
        response = await client.get("/down")
        assert response.status_code == status
        assert await redis_client.exists(_pass_key(cache, "/down")) == 0
        # Its lock is released all the same: the next request is not kept waiting.
        uhash = cache.url_hash("http", b"testserver", "/down", b"")
        assert (
            await redis_client.exists(keys.lock_key(keys.url_key(cache.namespace, 0, uhash))) == 0
        )
        origin.specs["/down"] = Spec()
        recovered = await client.get("/down")
    assert "stored" in recovered.headers["cache-status"]


class TimedOrigin(SlowOrigin):
    """A slow origin that also notes when (monotonic) it was first called."""

    def __init__(self, delay: float, **kwargs: Any) -> None:
        super().__init__(delay, **kwargs)
        self.first_call: float | None = None

    async def respond(self, request: Any) -> Any:
        if self.first_call is None:
            self.first_call = time.monotonic()
        return await super().respond(request)


#: Options of the middlewares standing for other processes' waiters. A second for Redis (not
#: 100 ms), as in the 200-request test: connections opening at once on a loaded machine must
#: not turn the lookups these tests count into fail-open misses. (Only the owner's options
#: make the lock TTL under test; waiters that time out would go to the app, as they should.)
WAITER_TIMEOUT = 1.0


async def waiter_clients(
    stack: AsyncExitStack, cache: RedisCache, origin: Any, count: int, **options: Any
) -> list[httpx.AsyncClient]:
    return [
        await stack.enter_async_context(
            make_client(cache, origin, default_ttl=60, timeout=WAITER_TIMEOUT, **options)
        )
        for _ in range(count)
    ]


def base_of(cache: RedisCache, path: str) -> str:
    return keys.url_key(cache.namespace, 0, cache.url_hash("http", b"testserver", path, b""))


def lock_of(cache: RedisCache, path: str) -> str:
    return keys.lock_key(base_of(cache, path))


async def test_dead_lock_owner_taken_over_within_lock_ttl(
    cache: RedisCache, redis_client: Any, backend_url: str, namespace: str
) -> None:
    """A worker that took the fill lock through the middleware is killed (SIGKILL) mid-fill:
    its lock, with the middleware's own TTL, is neither released nor renewed. Requests that
    arrive just after, on four middlewares, are served by one new fill, soon after the lock
    expires; none goes to the app at its coalesce_timeout."""
    coalesce_timeout = 3.0
    ttl = CacheConfig(coalesce_timeout=coalesce_timeout).fill_lock_ttl
    assert ttl <= coalesce_timeout / 4
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")])
    owner = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fill_owner",
        backend_url,
        namespace,
        str(coalesce_timeout),
        "/orphan",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert owner.stdout is not None
        line = await asyncio.wait_for(owner.stdout.readline(), 60)
    finally:
        owner.kill()
        await owner.wait()
    killed = time.monotonic()
    assert line == b"filling\n"
    lock = lock_of(cache, "/orphan")
    token, pttl = await redis_client.get(lock), await redis_client.pttl(lock)
    assert token is not None and int(token.split(b".")[1], 16) == owner.pid
    assert 0 < pttl <= ttl * 1000
    origin = TimedOrigin(0.2)
    await asyncio.sleep(0.05)
    async with AsyncExitStack() as stack, deadline(coalesce_timeout + 10):
        clients = await waiter_clients(stack, cache, origin, 4, coalesce_timeout=coalesce_timeout)
        responses = await asyncio.gather(*(c.get("/orphan") for c in clients for _ in range(10)))
    assert {r.status_code for r in responses} == {200}
    assert origin.calls["/orphan"] <= 2, origin.calls
    statuses = [r.headers["cache-status"] for r in responses]
    assert sum("collapsed" in s for s in statuses) >= len(responses) - 2, statuses
    # Taken over once the dead lock expired (at most its TTL after the kill) plus a poll or
    # two; well before the waiters' coalesce_timeout. Generous for a loaded machine.
    assert origin.first_call is not None
    assert origin.first_call - killed < ttl + POLL_CAP + 1.0
    assert await redis_client.exists(lock) == 0


@pytest.mark.parametrize(
    ("delay", "coalesce_timeout", "waves"),
    [
        # Slower than the lock's TTL: only its renewals keep it past the first TTL.
        pytest.param(1.8, 3.0, (0.1, 1.0), id="slower-than-lock-ttl"),
        # Even slower than coalesce_timeout: waiters that came late enough to still be
        # waiting when it answers are served by it; none takes the lock over.
        pytest.param(2.4, 2.0, (1.0,), id="slower-than-coalesce-timeout"),
    ],
)
async def test_live_slow_owner_keeps_its_lock(
    cache: RedisCache,
    redis_client: Any,
    delay: float,
    coalesce_timeout: float,
    waves: tuple[float, ...],
) -> None:
    """The owner of a fill lock whose app call is still running renews the lock: requests on
    four other middlewares (other processes) that come while it runs, also after the lock's
    TTL has passed, wait for its entry; the app is called once in all."""
    ttl = CacheConfig(coalesce_timeout=coalesce_timeout).fill_lock_ttl
    assert delay > 2 * ttl and max(waves) > ttl
    origin = SlowOrigin(delay)
    lock = lock_of(cache, "/slow")
    async with AsyncExitStack() as stack, deadline(delay + coalesce_timeout + 10):
        owning = await stack.enter_async_context(
            make_client(cache, origin, default_ttl=60, coalesce_timeout=coalesce_timeout)
        )
        clients = await waiter_clients(stack, cache, origin, 4, coalesce_timeout=coalesce_timeout)
        started = time.monotonic()
        first = asyncio.ensure_future(owning.get("/slow"))
        waiting = []
        for at in waves:
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            waiting += [asyncio.ensure_future(c.get("/slow")) for c in clients for _ in range(5)]
        assert time.monotonic() - started > ttl
        assert await redis_client.pttl(lock) > 0  # past its first TTL: renewed
        owner, *others = await asyncio.gather(first, *waiting)
    assert origin.calls["/slow"] == 1
    assert "stored" in owner.headers["cache-status"]
    assert all("collapsed" in r.headers["cache-status"] for r in others)
    assert {r.content for r in others} == {owner.content}
    assert await redis_client.exists(lock) == 0


async def test_background_refresh_keeps_its_lock(cache: RedisCache) -> None:
    """A stale-while-revalidate refresh slower than the lock's TTL renews the lock too: stale
    hits on other middlewares after that TTL start no second refresh."""
    from .test_stale import Versioned, client_for, wait_for_refreshes

    coalesce_timeout = 3.0
    ttl = CacheConfig(coalesce_timeout=coalesce_timeout).fill_lock_ttl
    origin = Versioned("max-age=1, stale-while-revalidate=30")
    async with AsyncExitStack() as stack, deadline(30):
        owning = await stack.enter_async_context(
            client_for(cache, origin, coalesce_timeout=coalesce_timeout)
        )
        clients = [
            await stack.enter_async_context(
                client_for(cache, origin, coalesce_timeout=coalesce_timeout, timeout=WAITER_TIMEOUT)
            )
            for _ in range(4)
        ]
        await owning.get("/doc")
        await asyncio.sleep(1.1)
        origin.version, origin.delay = 2, 2.4 * ttl
        assert (await owning.get("/doc")).headers["cache-status"].endswith("fwd=stale")
        await asyncio.sleep(1.3 * ttl)  # past the TTL the refresh's lock was taken with
        stale = await asyncio.gather(*(c.get("/doc") for c in clients for _ in range(3)))
        for client in [owning, *clients]:
            await wait_for_refreshes(client)
        fresh = await clients[3].get("/doc")
    assert {r.content for r in stale} == {b"document v1"}
    assert origin.calls == 2  # the first fill and one refresh
    assert fresh.content == b"document v2"


class Renewals:
    """Wraps a cache's ``renew_fill`` to note each renewal sent, and its answer."""

    def __init__(self, cache: RedisCache, fail: bool = False) -> None:
        #: One item per renewal sent: its answer, None until it comes (or if it failed).
        self.calls: list[bool | None] = []
        self.fail = fail
        self.first = asyncio.Event()
        self._renew = cache.renew_fill

    async def __call__(self, *args: Any) -> bool:
        self.first.set()
        index = len(self.calls)
        self.calls.append(None)
        if self.fail:
            raise redis.ConnectionError("renewal lost")
        kept = await self._renew(*args)
        self.calls[index] = kept
        return kept


@pytest.mark.parametrize("ending", ["response", "error", "disconnect"])
async def test_renewals_stop_when_the_fill_ends(
    cache: RedisCache, redis_client: Any, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """The owner renews while its app runs and stops when the forward ends: the response is
    complete, the app raised, or the client went away and the app stopped."""
    renewals = Renewals(cache)
    monkeypatch.setattr(cache, "renew_fill", renewals)
    middleware_options: dict[str, Any] = {"default_ttl": 60, "coalesce_timeout": 1.0}
    ttl = CacheConfig(**middleware_options).fill_lock_ttl
    run_for = 3 * ttl
    gone = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"cache-control", b"max-age=60")]
        if ending == "disconnect":
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        await asyncio.sleep(run_for)
        if ending == "error":
            raise RuntimeError("app failed")
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"whole"})

    async def receive() -> dict[str, Any]:
        if not gone.is_set():
            gone.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(run_for)
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    middleware = CacheMiddleware(app, cache=cache, **middleware_options)
    async with deadline(10):
        if ending == "error":
            with pytest.raises(RuntimeError, match="app failed"):
                await middleware(http_scope("/r"), receive, send)
        else:
            await middleware(http_scope("/r"), receive, send)
        during = len(renewals.calls)
        await asyncio.sleep(3 * ttl)  # six renewal periods
    # The last one may have crossed the store or release (then it found no lock of ours).
    assert during >= 2 and all(renewals.calls[:-1]), renewals.calls
    assert len(renewals.calls) == during  # none sent since
    assert await redis_client.exists(lock_of(cache, "/r")) == 0
    assert await redis_client.exists(base_of(cache, "/r")) == (ending == "response")


async def test_renewal_never_extends_a_lock_taken_over(
    cache: RedisCache, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the owner's lock expire anyway (say its loop stalled) and another take it over,
    the owner's next renewal finds another token, changes nothing, and is its last."""
    renewals = Renewals(cache)
    monkeypatch.setattr(cache, "renew_fill", renewals)
    ttl = CacheConfig(coalesce_timeout=1.0).fill_lock_ttl
    origin = SlowOrigin(4 * ttl)
    lock = lock_of(cache, "/taken")
    async with deadline(10), make_client(cache, origin, default_ttl=60, coalesce_timeout=1.0) as c:
        request = asyncio.ensure_future(c.get("/taken"))
        await renewals.first.wait()
        await redis_client.set(lock, b"someone-else", px=60_000)
        response = await request
    assert response.status_code == 200
    answers = renewals.calls
    assert answers[-1] is False and answers.count(False) == 1, answers
    assert await redis_client.get(lock) == b"someone-else"  # not extended, not deleted
    assert await redis_client.pttl(lock) > 50_000


async def test_failing_renewals_fail_open(
    cache: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renewal Redis does not answer is counted and logged; the fill goes on, is tried
    again at the next tick, and the response is served and stored."""
    renewals = Renewals(cache, fail=True)
    monkeypatch.setattr(cache, "renew_fill", renewals)
    ttl = CacheConfig(coalesce_timeout=1.0).fill_lock_ttl
    # Two or three renewals, fewer than the five failures in a row that open the breaker
    # (which would then skip the store as well: that is the breaker's job, not this test's).
    origin = SlowOrigin(1.6 * ttl)
    async with deadline(10), make_client(cache, origin, default_ttl=60, coalesce_timeout=1.0) as c:
        response = await c.get("/flaky-redis")
    assert response.status_code == 200
    assert "stored" in response.headers["cache-status"]
    assert len(renewals.calls) >= 2
    assert cache.stats.redis_error >= 2


async def test_waiter_taking_a_lock_freed_by_the_store_serves_that_entry(
    cache: RedisCache, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner stores (which deletes its lock) between a waiter's look for the entry and
    its next try at the lock: the waiter gets the free lock, looks again before calling the
    app, serves the entry and gives the lock back. One app call."""
    origin = SlowOrigin(0.3)
    stored = asyncio.Event()
    store = cache.store

    async def store_and_tell(*args: Any, **kwargs: Any) -> None:
        await store(*args, **kwargs)
        stored.set()

    monkeypatch.setattr(cache, "store", store_and_tell)
    other = RedisCache(redis_client, namespace=cache.namespace)  # another process's cache
    acquire = other.acquire_fill
    tries = 0

    async def acquire_once_stored(*args: Any) -> int:
        nonlocal tries
        tries += 1
        if tries > 1:  # a look has missed since the first try: let the owner store now
            await stored.wait()
        return await acquire(*args)

    monkeypatch.setattr(other, "acquire_fill", acquire_once_stored)
    async with (
        deadline(10),
        make_client(cache, origin, default_ttl=60) as owning,
        make_client(other, origin, default_ttl=60, timeout=WAITER_TIMEOUT) as waiting,
    ):
        first = asyncio.ensure_future(owning.get("/race"))
        await asyncio.sleep(0.05)
        second = await waiting.get("/race")
        response = await first
    assert tries == 2
    assert origin.calls["/race"] == 1
    assert "stored" in response.headers["cache-status"]
    assert "collapsed" in second.headers["cache-status"]
    assert await redis_client.exists(lock_of(cache, "/race")) == 0


async def test_waiters_give_up_after_coalesce_timeout(cache: RedisCache) -> None:
    uhash = cache.url_hash("http", b"testserver", "/stuck", b"")
    await cache.acquire_fill(uhash, FillLock("", "slow-owner"), 60, 0)
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60, coalesce_timeout=0.3) as client:
        started = time.monotonic()
        responses = await asyncio.gather(*(client.get("/stuck") for _ in range(5)))
        elapsed = time.monotonic() - started
    assert {r.status_code for r in responses} == {200}
    assert 0.25 < elapsed < 2.0
    assert origin.calls["/stuck"] >= 1


async def test_owner_raising_releases_lock_for_waiters(cache: RedisCache) -> None:
    class FlakyOrigin(SlowOrigin):
        async def respond(self, request: Any) -> Any:
            if self.calls["/flaky"] == 0:
                self.calls["/flaky"] += 1
                await asyncio.sleep(0.1)
                raise RuntimeError("first call fails")
            return await super().respond(request)

    origin = FlakyOrigin(0.05)
    async with make_client(cache, origin, default_ttl=60) as client:
        results = await asyncio.gather(
            *(client.get("/flaky") for _ in range(5)), return_exceptions=True
        )
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 1
    assert all(r.status_code == 200 for r in results if not isinstance(r, Exception))
    assert origin.calls["/flaky"] <= 3


@pytest.fixture
def workers(redis_server: RedisServer, namespace: str) -> Iterator[tuple[str, redis.Redis]]:
    client = redis.Redis.from_url(redis_server.url)
    try:
        with uvicorn_on_loopback(
            "tests.e2e_app:app",
            redis_url=redis_server.url,
            namespace=namespace,
            probe="/calls",
            args=["--workers", "4"],
            env={"E2E_DELAY": "0.2"},
            settle=1.0,  # let every worker come up
        ) as base:
            yield base, client
    finally:
        client.close()


async def test_four_processes_one_app_call(
    workers: tuple[str, redis.Redis], namespace: str
) -> None:
    base, client = workers
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as http:
        responses = await asyncio.gather(*(http.get("/slow/1") for _ in range(200)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    # The handler counts its calls in Redis, across all four worker processes.
    assert int(client.get(f"{namespace}:calls:/slow/1") or 0) == 1
    pids = {r.json()["pid"] for r in responses}
    assert len(pids) == 1  # one process filled; the rest served its entry


# -- the lookup that takes the fill lock in the same round trip ------------------------------


async def test_lookup_takes_the_fill_lock_only_when_the_url_is_empty(
    cache: RedisCache, redis_client: Any
) -> None:
    from redis_cache_middleware.cache import ACQUIRED, HELD, PASS

    uhash = cache.url_hash("http", b"testserver", "/lk", b"")
    base = keys.url_key(cache.namespace, 0, uhash)

    def no_values(names: tuple[str, ...]) -> list[bytes | None]:
        return [None] * len(names)

    # The first lookup of a second also reads the namespace generation, in a pipeline that
    # takes no lock (the middleware then takes it on its own); the ones after it do.
    await cache.lookup(cache.url_hash("http", b"testserver", "/warm", b""), no_values)
    first = await cache.lookup(uhash, no_values, fill=FillLock("", "tok-a"), fill_ttl=5)
    assert (first.state, first.lock) == ("uri-miss", ACQUIRED)
    assert await redis_client.get(keys.lock_key(base)) == b"tok-a"
    assert 0 < await redis_client.pttl(keys.lock_key(base)) <= 5000
    second = await cache.lookup(uhash, no_values, fill=FillLock("", "tok-b"), fill_ttl=5)
    assert (second.state, second.lock) == ("uri-miss", HELD)
    assert await redis_client.get(keys.lock_key(base)) == b"tok-a"
    await cache.release_fill(uhash, FillLock("", "tok-a"), 0, pass_for=5)
    third = await cache.lookup(uhash, no_values, fill=FillLock("", "tok-c"), fill_ttl=5)
    assert (third.state, third.lock) == ("uri-miss", PASS)
    assert await redis_client.get(keys.lock_key(base)) is None
    # Something that is not our lock (ours always expire) at the lock key is taken over.
    other = cache.url_hash("http", b"testserver", "/foreign", b"")
    other_lock = keys.lock_key(keys.url_key(cache.namespace, 0, other))
    await redis_client.rpush(other_lock, b"x")
    taken = await cache.lookup(other, no_values, fill=FillLock("", "tok-d"), fill_ttl=5)
    assert taken.lock == ACQUIRED and await redis_client.get(other_lock) == b"tok-d"


async def test_lookup_with_a_lock_on_a_stored_or_broken_url_takes_no_lock(
    cache: RedisCache, redis_client: Any
) -> None:
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/stored")
    uhash = cache.url_hash("http", b"testserver", "/stored", b"")
    base = keys.url_key(cache.namespace, 0, uhash)
    await cache.lookup(uhash, lambda n: [None] * len(n))  # the generation, read once a second
    found = await cache.lookup(uhash, lambda n: [None] * len(n), fill=FillLock("", "t"))
    assert found.state == "hit" and found.lock is None
    assert await redis_client.exists(keys.lock_key(base)) == 0

    broken = cache.url_hash("http", b"testserver", "/broken", b"")
    broken_base = keys.url_key(cache.namespace, 0, broken)
    await redis_client.set(broken_base, b"not a hash")
    found = await cache.lookup(broken, lambda n: [None] * len(n), fill=FillLock("", "t"))
    assert found.state == "corrupt" and found.lock is None
    assert await redis_client.exists(keys.lock_key(broken_base)) == 0


async def test_miss_leaves_no_lock_behind_and_second_process_collapses(
    cache: RedisCache, redis_client: Any
) -> None:
    # Two middlewares over one Redis stand for two processes: the first one's lookup takes
    # the lock, the second sees it held and is answered from the first one's fill.
    origin = SlowOrigin(0.3)
    async with (
        make_client(cache, origin, default_ttl=60) as one,
        make_client(cache, origin, default_ttl=60) as two,
    ):
        first = asyncio.ensure_future(one.get("/shared"))
        await asyncio.sleep(0.1)
        second = await two.get("/shared")
        response = await first
    assert origin.calls["/shared"] == 1
    assert "stored" in response.headers["cache-status"]
    assert "collapsed" in second.headers["cache-status"]
    assert second.content == response.content
    uhash = cache.url_hash("http", b"testserver", "/shared", b"")
    assert await redis_client.exists(keys.lock_key(keys.url_key(cache.namespace, 0, uhash))) == 0


async def test_only_if_cached_takes_no_lock(cache: RedisCache, redis_client: Any) -> None:
    origin = Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        refused = await client.get("/o", headers={"cache-control": "only-if-cached"})
    assert refused.status_code == 504
    uhash = cache.url_hash("http", b"testserver", "/o", b"")
    lock = keys.lock_key(keys.url_key(cache.namespace, 0, uhash))
    assert await redis_client.exists(lock) == 0
    assert origin.calls["/o"] == 0


async def test_a_head_miss_fills_under_the_lock_and_a_get_collapses_into_it(
    cache: RedisCache, redis_client: Any
) -> None:
    # A HEAD miss is a fill like a GET's (the app gets a GET): another process's GET waits.
    origin = SlowOrigin(0.2)
    async with (
        make_client(cache, origin, default_ttl=60) as one,
        make_client(cache, origin, default_ttl=60) as two,
    ):
        head = asyncio.ensure_future(one.head("/hl"))
        await asyncio.sleep(0.1)
        get = await two.get("/hl")
        filled = await head
    assert origin.calls["/hl"] == 1
    assert filled.headers["cache-status"].endswith("; stored") and filled.content == b""
    assert "collapsed" in get.headers["cache-status"] and get.content.startswith(b"/hl?")
    uhash = cache.url_hash("http", b"testserver", "/hl", b"")
    assert await redis_client.exists(keys.lock_key(keys.url_key(cache.namespace, 0, uhash))) == 0


# INFO commandstats is a real single Redis's: fakeredis has none, a cluster spreads them.
@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_hits_on_a_url_seen_stored_are_one_plain_hgetall(
    cache: RedisCache, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One command, one round trip per hit: a plain HGETALL while this process knows the key
    # has a TTL (it stored it); no script, no lock, no pipeline. The commands go on the lane
    # (one pipelined connection), or through the client with ``multiplex=False``.
    origin = Origin()
    sent: list[tuple[Any, ...]] = []
    lane = cache._state.lane
    assert lane is not None  # a plain client on one Redis: the request path is multiplexed
    execute = Lane.execute

    async def spy(self: Lane, *args: Any) -> Any:
        sent.append(args)
        return await execute(self, *args)

    async with make_client(cache, origin, default_ttl=60) as client:
        await client.get("/seen")  # stored by this process: it knows the URL is there
        await client.get("/seen")  # the first hit may also read the generation
        await redis_client.config_resetstat()
        monkeypatch.setattr(Lane, "execute", spy)
        for _ in range(20):
            response = await client.get("/seen")
            assert "hit" in response.headers["cache-status"]
        monkeypatch.undo()
    stats = await redis_client.info("commandstats")
    assert stats["cmdstat_hgetall"]["calls"] == 20
    sent_names = {name.removeprefix("cmdstat_") for name in stats}
    assert sent_names == {"hgetall", "config|resetstat"}
    assert [a[0] for a in sent] == [b"HGETALL"] * 20


def test_fill_tokens_are_unique_and_name_the_process() -> None:
    import os

    from redis_cache_middleware.cache import new_token

    tokens = [new_token() for _ in range(10_000)]
    assert len(set(tokens)) == len(tokens)
    prefix, pid, _ = tokens[0].split(".")
    assert len(prefix) == 12 and int(pid, 16) == os.getpid()
    # Forked workers share the random prefix: the process id keeps their tokens apart.
    assert all(t.startswith(f"{prefix}.{pid}.") for t in tokens)


# -- waiters whose coalesce_timeout runs out: one takes the fill over ------------------------


class GatedOrigin(Origin):
    """Numbers its calls (body ``call=N``, stored for a minute) and notes when (wall clock)
    it produced each answer; the calls numbered in ``held`` wait at ``gate`` first."""

    def __init__(self, held: Collection[int] = (1,)) -> None:
        super().__init__()
        self.held = set(held)
        self.gate = asyncio.Event()
        self.at_gate = asyncio.Event()
        self.produced: dict[int, float] = {}

    async def respond(self, request: Any) -> Any:
        path = request.url.path
        self.calls[path] += 1
        number = self.calls[path]
        if number in self.held:
            self.at_gate.set()
            await self.gate.wait()
        self.produced[number] = time.time()
        return Response(f"call={number}".encode(), headers={"cache-control": "max-age=60"})


def call_number(response: httpx.Response) -> int:
    return int(response.content.decode().removeprefix("call="))


#: coalesce_timeout in the takeover tests: small, so the test is short, yet its fill lock
#: (lock_ttl_for: 0.25 s) is renewed often enough on a loaded machine.
WINDOW = 0.5


@pytest.mark.parametrize("later_calls", ["fast", "held"])
async def test_waiters_past_coalesce_timeout_take_the_fill_over_one_at_a_time(
    cache: RedisCache, later_calls: str
) -> None:
    """50 concurrent misses; the first app call takes 2.5 coalesce_timeouts. At each timeout
    one waiter takes the fill over and the others wait for it: at most one more app call per
    timeout (before takeovers: all 49 waiters went to the app at the first one). Fast later
    calls serve every waiter at the first timeout, long before the first call ends."""
    origin = GatedOrigin(held=range(1, 100) if later_calls == "held" else (1,))
    async with (
        deadline(20),
        make_client(cache, origin, default_ttl=60, coalesce_timeout=WINDOW) as client,
    ):
        requests = [asyncio.ensure_future(client.get("/slow")) for _ in range(50)]
        await origin.at_gate.wait()
        await asyncio.sleep(2.5 * WINDOW)
        done_before_gate = sum(r.done() for r in requests)
        calls_before_gate = origin.calls["/slow"]
        origin.gate.set()
        responses = await asyncio.gather(*requests)
    assert {r.status_code for r in responses} == {200}
    # The first call and one per elapsed coalesce_timeout (two of them), at most.
    assert origin.calls["/slow"] <= 3, origin.calls
    assert calls_before_gate >= 2  # the waiters did not just wait for the first call
    statuses = [r.headers["cache-status"] for r in responses]
    assert sum("collapsed" in s for s in statuses) >= len(responses) - 3, statuses
    if later_calls == "fast":
        assert origin.calls["/slow"] == 2
        assert done_before_gate == 49  # all but the first, served by the takeover's fill


@pytest.mark.parametrize("later_calls", ["fast", "held"])
async def test_takeover_across_processes_one_waiter_for_all(
    cache: RedisCache, backend_url: str, namespace: str, later_calls: str
) -> None:
    """Two middlewares over two clients of one Redis stand for two workers, 25 requests each,
    for a URL whose first app call takes 2.5 coalesce_timeouts: one waiter of either takes
    the fill over at each timeout, and its entry serves the other's waiters too (those of
    the first worker, which follow its slow fill, through a look in Redis)."""
    origin = GatedOrigin(held=range(1, 100) if later_calls == "held" else (1,))
    async with (
        deadline(30),
        RedisCache.from_url(backend_url, namespace=namespace) as other,
    ):
        await other.warm_up()
        async with (
            make_client(cache, origin, default_ttl=60, coalesce_timeout=WINDOW) as one,
            make_client(other, origin, default_ttl=60, coalesce_timeout=WINDOW) as two,
        ):
            requests = [asyncio.ensure_future(one.get("/both"))]
            await origin.at_gate.wait()  # the first process fills, and holds the lock
            requests += [asyncio.ensure_future(c.get("/both")) for c in (one, two) * 25]
            await asyncio.sleep(2.5 * WINDOW)
            done_before_gate = sum(r.done() for r in requests)
            origin.gate.set()
            responses = await asyncio.gather(*requests)
    assert {r.status_code for r in responses} == {200}
    assert origin.calls["/both"] <= 3, origin.calls  # not 51
    statuses = [r.headers["cache-status"] for r in responses]
    assert sum("collapsed" in s for s in statuses) >= len(responses) - 3, statuses
    if later_calls == "fast":
        assert origin.calls["/both"] == 2
        assert done_before_gate == 50


async def test_an_end_in_the_same_turn_as_the_deadline_is_not_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fill that ends in the loop turn its follower's wait runs out in: the follower must
    see the end. Taken for a timeout, it would follow the next fill for a whole
    coalesce_timeout and then call the app again, beside the entry just stored."""
    fills = Fills()

    @asynccontextmanager
    async def end_and_deadline_together(timeout: float) -> AsyncIterator[None]:
        task = asyncio.current_task()
        assert task is not None

        def both() -> None:
            fills.end(Outcome.STORED)  # the fill ends...
            task.cancel()  # ...and the wait's deadline passes, in one turn of the loop

        asyncio.get_running_loop().call_soon(both)
        try:
            yield
        except asyncio.CancelledError:
            raise asyncio.TimeoutError from None

    monkeypatch.setattr(coalesce, "bounded", end_and_deadline_together)
    fills.running = 1
    assert await fills.next_end(5.0) is Outcome.STORED


async def test_takeover_without_redis_is_decided_in_the_process(
    cache: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The takeover call fails (Redis gone after the fill began): the first waiter of the
    process to time out takes the fill over, the others wait for it."""

    async def down(*args: Any, **kwargs: Any) -> int:
        raise redis.ConnectionError("down")

    monkeypatch.setattr(cache, "take_over_fill", down)
    origin = GatedOrigin()
    async with (
        deadline(20),
        make_client(cache, origin, default_ttl=60, coalesce_timeout=WINDOW) as client,
    ):
        requests = [asyncio.ensure_future(client.get("/alone")) for _ in range(20)]
        await origin.at_gate.wait()
        await asyncio.sleep(1.5 * WINDOW)
        origin.gate.set()
        responses = await asyncio.gather(*requests)
    assert {r.status_code for r in responses} == {200}
    assert origin.calls["/alone"] == 2, origin.calls


# -- requests no-cache: coalesced, each answered by a response produced after it came ------


async def came_in(cache: RedisCache, count: int) -> None:
    """Wait until ``count`` requests that skip the lookup (``stats.bypass``) have come in, and
    a little longer, so that each has gone as far as it goes without the app."""
    for _ in range(2000):
        if cache.stats.bypass >= count:
            await asyncio.sleep(0.2)
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{cache.stats.bypass} of {count} requests came in")


NO_CACHE = {"cache-control": {"cache-control": "no-cache"}, "pragma": {"pragma": "no-cache"}}


@pytest.mark.parametrize("header", sorted(NO_CACHE))
async def test_concurrent_no_cache_requests_share_one_app_call(
    cache: RedisCache, header: str
) -> None:
    """200 concurrent requests no-cache for a URL with a fresh entry, the app call held: one
    app call answers them all (before: one each, 200), each with a response produced after
    it arrived, never the entry it found. A plain request after them hits the refilled
    entry; a no-cache request after that gets an app call of its own."""
    origin = GatedOrigin(held=(2,))
    forced = NO_CACHE[header]
    async with deadline(30), make_client(cache, origin, default_ttl=60) as client:
        warm = await client.get("/nc")  # call 1, stored
        sent = time.time()
        requests = [asyncio.ensure_future(client.get("/nc", headers=forced)) for _ in range(200)]
        await origin.at_gate.wait()
        await came_in(cache, 200)
        origin.gate.set()
        responses = await asyncio.gather(*requests)
        calls = origin.calls["/nc"] - 1
        plain = await client.get("/nc")
        again = await client.get("/nc", headers=forced)
    assert call_number(warm) == 1
    assert {r.status_code for r in responses} == {200}
    # One call in flight, and at most one more for requests that came in after its answer
    # was produced (none here: all came in before the gate opened).
    assert calls <= 2, origin.calls
    numbers = {call_number(r) for r in responses}
    assert 1 not in numbers and all(origin.produced[n] >= sent for n in numbers)
    statuses = [r.headers["cache-status"] for r in responses]
    stored = "redis-cache; fwd=request; fwd-status=200; stored"
    assert sum(s.startswith(stored) for s in statuses) == calls
    collapsed = [s for s in statuses if "collapsed" in s]
    assert len(collapsed) == 200 - calls
    assert all(
        s.startswith("redis-cache; fwd=request; fwd-status=200; collapsed") for s in collapsed
    )
    assert cache.stats.bypass == 201
    assert "; hit; " in plain.headers["cache-status"] and call_number(plain) in numbers
    assert call_number(again) == 2 + calls and "stored" in again.headers["cache-status"]


async def test_no_cache_requests_after_the_answer_wait_for_the_next_fill(
    cache: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests no-cache that come in after the app produced the answer being stored (but
    before it is stored) are not served with it: one more app call serves all of them."""
    origin = GatedOrigin(held=())
    store = cache.store
    storing = asyncio.Event()
    resume = asyncio.Event()

    async def slow_first_store(*args: Any, **kwargs: Any) -> None:
        if not storing.is_set():
            storing.set()
            await resume.wait()
        await store(*args, **kwargs)

    monkeypatch.setattr(cache, "store", slow_first_store)
    forced = NO_CACHE["cache-control"]
    async with deadline(30), make_client(cache, origin, default_ttl=60) as client:
        early = [asyncio.ensure_future(client.get("/late", headers=forced)) for _ in range(20)]
        await storing.wait()  # call 1 answered; its store is held
        late = [asyncio.ensure_future(client.get("/late", headers=forced)) for _ in range(20)]
        await came_in(cache, 40)
        resume.set()
        early_responses = await asyncio.gather(*early)
        late_responses = await asyncio.gather(*late)
    assert origin.calls["/late"] == 2, origin.calls
    assert {call_number(r) for r in early_responses} == {1}
    assert {call_number(r) for r in late_responses} == {2}
    assert sum("collapsed" in r.headers["cache-status"] for r in late_responses) == 19


async def test_no_cache_requests_coalesced_across_processes(cache: RedisCache) -> None:
    """Two middlewares stand for two processes, 50 requests no-cache each, the app call held:
    one app call answers all of them, through the fill lock."""
    origin = GatedOrigin(held=(2,))
    forced = NO_CACHE["cache-control"]
    async with (
        deadline(30),
        make_client(cache, origin, default_ttl=60) as one,
        make_client(cache, origin, default_ttl=60) as two,
    ):
        await one.get("/nc2")  # call 1, stored
        requests = [asyncio.ensure_future(c.get("/nc2", headers=forced)) for c in (one, two) * 50]
        await origin.at_gate.wait()
        await came_in(cache, 100)
        origin.gate.set()
        responses = await asyncio.gather(*requests)
    assert origin.calls["/nc2"] == 2, origin.calls
    assert {call_number(r) for r in responses} == {2}
    assert sum("collapsed" in r.headers["cache-status"] for r in responses) == 99


async def test_take_over_fill_once_per_window(cache: RedisCache, redis_client: Any) -> None:
    """The takeover script: the lock becomes the taker's whoever held it (the slow owner's
    renewals and release leave it alone), at most once per window; hit-for-pass wins."""
    from redis_cache_middleware.cache import ACQUIRED, HELD, PASS

    uhash = cache.url_hash("http", b"testserver", "/to", b"")
    lock = lock_of(cache, "/to")
    slow = FillLock("", "slow")
    assert await cache.acquire_fill(uhash, slow, 60, 0) == ACQUIRED
    assert await cache.take_over_fill(uhash, FillLock("", "a"), 5, 0.5, 0) == ACQUIRED
    assert await redis_client.get(lock) == b"a"
    assert 0 < await redis_client.pttl(lock) <= 5000
    assert await cache.take_over_fill(uhash, FillLock("", "b"), 5, 0.5, 0) == HELD
    assert not await cache.renew_fill(uhash, slow, 60, 0)
    await cache.release_fill(uhash, slow, 0)
    assert await redis_client.get(lock) == b"a"
    await asyncio.sleep(0.6)  # the window is over
    assert await cache.take_over_fill(uhash, FillLock("", "b"), 5, 0.5, 0) == ACQUIRED
    assert await redis_client.get(lock) == b"b"
    takeover = keys.takeover_key(base_of(cache, "/to"))
    assert keys.takeover_key(base_of(cache, "/to"), "vh") != takeover
    await cache.release_fill(uhash, FillLock("", "b"), 0, pass_for=5)
    await redis_client.delete(takeover)
    assert await cache.take_over_fill(uhash, FillLock("", "c"), 5, 0.5, 0) == PASS
    assert await redis_client.get(lock) is None


async def test_a_waiter_is_served_a_fill_only_as_fresh_as_it_asks(cache: RedisCache) -> None:
    # The fill is fresh for 10 s. A waiter asking min-fresh=100 may not be served it (RFC
    # 9111 5.2.1.3): it calls the app itself. A reload's max-age=0 is served the fill, which
    # the app answered while it waited (Age: 0).
    origin = SlowOrigin(0.3, specs={"/f": Spec(headers=[("cache-control", "max-age=10")])})
    async with make_client(cache, origin) as client:
        first = asyncio.create_task(client.get("/f"))
        await asyncio.sleep(0.1)  # the first request is in the app: the others follow it
        picky, reload = await asyncio.gather(
            client.get("/f", headers={"cache-control": "min-fresh=100"}),
            client.get("/f", headers={"cache-control": "max-age=0"}),
        )
        filled = await first
    assert filled.headers["cache-status"].endswith("; stored")
    assert "collapsed" in reload.headers["cache-status"] and reload.headers["age"] == "0"
    assert reload.content == filled.content
    assert "collapsed" not in picky.headers["cache-status"]
    assert picky.headers["cache-status"].startswith("redis-cache; fwd=uri-miss; fwd-status=200")
    assert origin.calls["/f"] == 2


def test_a_forked_worker_names_its_own_process_in_its_tokens() -> None:
    # The process id is read once per process, not per token: a worker forked after the
    # import (uvicorn, gunicorn) must still put its own id in its tokens.
    from redis_cache_middleware.cache import new_token

    parent = new_token()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.write(write, f"{os.getpid():x} {new_token()}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_pid, child_token = pipe.read().split()
    os.waitpid(child, 0)
    assert child_token.split(".")[1] == child_pid != parent.split(".")[1]
    assert child_token.split(".")[0] == parent.split(".")[0]
