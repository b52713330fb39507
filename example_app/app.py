"""The example service: ``create_app()`` builds it, and nothing happens at import time.

* ``/quotes/{symbol}``: stock quotes from a slow, rate-limited upstream (simulated). The
  upstream says how long a quote stays good (``Cache-Control: public, max-age=10``), so within
  those ten seconds every client is answered from Redis and the upstream is spared.
* ``/users``: a small CRUD API over an in-memory dict. Reads are cached; every write purges
  the URLs it changed with ``cache.purge_url(...)``, so the next read sees the new data.
* ``/_cache/purge`` (and ``PURGE`` on any URL): the middleware's purge endpoint, and the
  ``X-Cache-Bypass`` header, both guarded by one token (``CACHE_PURGE_TOKEN``, else made up
  when the app is built and shown by ``python -m example_app``).

All state lives in the app that ``create_app`` returns (not in the lifespan), so the app also
works under ``httpx.ASGITransport``, which does not run the lifespan.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import fakeredis
from fastapi import FastAPI, HTTPException, Path, Request, Response, status
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from redis_cache_middleware import CacheMiddleware, ConfigError, RedisCache
from redis_cache_middleware.config import MIN_TOKEN_LENGTH

logger = logging.getLogger("example_app")

#: The key prefix of everything this app stores in Redis.
NAMESPACE = "example"
#: Seconds a response without its own freshness information stays cached.
DEFAULT_TTL = 30
#: Seconds the simulated upstream takes per quote, unless ``UPSTREAM_LATENCY`` says otherwise.
DEFAULT_UPSTREAM_LATENCY = 0.3

SYMBOL_PATTERN = r"^[A-Za-z]{1,10}$"

#: What reads of the users API say about their freshness.
USERS_CACHE_CONTROL = "max-age=60"
#: What a quote says about its freshness: shared caches may keep it ten seconds.
QUOTE_CACHE_CONTROL = "public, max-age=10"
#: The request header that skips the cache and refreshes the entry (with the token as value).
BYPASS_HEADER = "X-Cache-Bypass"
#: Where the middleware serves the purge endpoint (its default).
PURGE_PATH = "/_cache/purge"
#: The environment variable holding the purge and bypass token.
TOKEN_VARIABLE = "CACHE_PURGE_TOKEN"


# -- the cache ---------------------------------------------------------------------------


def cache_from_env() -> RedisCache:
    """Return a cache in the Redis at ``REDIS_URL``, or in an in-process stand-in without it."""
    url = os.environ.get("REDIS_URL")
    if url:
        logger.info("caching responses in Redis at %s", without_password(url))
        return RedisCache.from_url(url, namespace=NAMESPACE)
    logger.warning(
        "REDIS_URL is not set: caching in an in-process Redis stand-in (fakeredis) that "
        "nothing outside this process can reach, and that is lost on exit. "
        "`python -m example_app` serves its stand-in on a loopback port instead; set "
        "REDIS_URL=redis://localhost:6379/0 to use a real Redis."
    )
    return RedisCache(fakeredis.FakeAsyncRedis(), namespace=NAMESPACE)


def token_from_env() -> str:
    """Return ``CACHE_PURGE_TOKEN``, or a new random token when it is unset or empty."""
    return os.environ.get(TOKEN_VARIABLE) or secrets.token_urlsafe(24)


def without_password(url: str) -> str:
    """Return a Redis URL with its password replaced by ``***``, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


# -- the quotes upstream -----------------------------------------------------------------


class Quote(BaseModel):
    """One quote as the upstream returns it."""

    symbol: str
    price: float
    currency: str
    fetched_at: str = Field(description="when the upstream was asked (ISO 8601, UTC)")


class UpstreamCalls(BaseModel):
    """How often the upstream has been called by this process."""

    calls: int


class RateLimited(Exception):
    """The upstream's rate limit is reached; ``retry_after`` is in seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited; retry after {retry_after:.2f}s")
        self.retry_after = retry_after


class RateLimiter:
    """At most ``calls`` acquisitions in any ``period`` seconds (a sliding window)."""

    def __init__(self, calls: int, period: float) -> None:
        if calls < 1 or period <= 0:
            raise ValueError("a rate limit needs calls >= 1 and period > 0")
        self.calls = calls
        self.period = period
        self._times: deque[float] = deque()

    def acquire(self) -> None:
        """Take one call from the budget, or raise ``RateLimited``."""
        now = time.monotonic()
        while self._times and now - self._times[0] >= self.period:
            self._times.popleft()
        if len(self._times) >= self.calls:
            raise RateLimited(self.period - (now - self._times[0]))
        self._times.append(now)


class QuotesUpstream:
    """A stand-in for a slow, rate-limited market-data API.

    Prices are deterministic per symbol and minute, so they change over time but any two
    calls in the same minute agree; ``fetched_at`` tells the calls apart.
    """

    def __init__(self, latency: float, limiter: RateLimiter) -> None:
        self.latency = latency
        self.limiter = limiter
        self.calls = 0

    async def fetch(self, symbol: str) -> Quote:
        """Return a quote for ``symbol`` after ``latency`` seconds, or raise ``RateLimited``."""
        self.limiter.acquire()
        self.calls += 1
        await asyncio.sleep(self.latency)
        minute = int(time.time() // 60)
        base = _hash_int(symbol) % 90_000 + 1_000  # cents: 10.00 .. 909.99
        drift = _hash_int(f"{symbol}:{minute}") % 201 - 100  # +- 1.00 per minute
        return Quote(
            symbol=symbol,
            price=(base + drift) / 100,
            currency="USD",
            fetched_at=datetime.now(timezone.utc).isoformat(),
        )


def _hash_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _latency_from_env() -> float:
    raw = os.environ.get("UPSTREAM_LATENCY")
    if raw is None or not raw.strip():
        return DEFAULT_UPSTREAM_LATENCY
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"UPSTREAM_LATENCY must be a number of seconds; got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"UPSTREAM_LATENCY must be a finite number >= 0; got {raw!r}")
    return value


# -- the users API -----------------------------------------------------------------------


class UserIn(BaseModel):
    """What a client sends to create or replace a user."""

    name: str = Field(min_length=1, max_length=100)
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)


class User(UserIn):
    """A stored user."""

    id: int


class Index(BaseModel):
    """The service's front page."""

    service: str
    namespace: str = Field(description="the key prefix of this app's entries in Redis")
    endpoints: dict[str, str]


INDEX = Index(
    service="redis-cache-middleware example",
    namespace=NAMESPACE,
    endpoints={
        "GET /quotes/{symbol}": "a stock quote from a slow upstream (cached 10 s)",
        "GET /upstream-calls": "how often the upstream was called (never cached)",
        "GET /users": "list users (cached)",
        "GET /users/{user_id}": "one user (cached)",
        "POST /users": "create a user (purges the list)",
        "PUT /users/{user_id}": "replace a user (purges it and the list)",
        "DELETE /users/{user_id}": "delete a user (purges it and the list)",
        f"POST {PURGE_PATH}": "purge by URL, tag or prefix (Authorization: Bearer <token>)",
        "PURGE /any/url": "purge that URL (Authorization: Bearer <token>)",
        f"GET with {BYPASS_HEADER}: <token>": "skip the cache and refresh the entry",
    },
)


# -- the app -----------------------------------------------------------------------------


def create_app(
    cache: RedisCache | None = None,
    *,
    token: str | None = None,
    upstream_latency: float | None = None,
    rate_limit_calls: int = 5,
    rate_limit_period: float = 1.0,
    host_aliases: Mapping[str, str] | None = None,
) -> FastAPI:
    """Return the example app, caching in ``cache`` (default: ``cache_from_env()``).

    The app closes the cache when its lifespan ends. ``token`` (default: ``token_from_env()``,
    kept in ``app.state.token``) opens the purge endpoint and the bypass header.
    ``upstream_latency`` defaults to ``UPSTREAM_LATENCY`` from the environment (else 0.3 s);
    the upstream accepts at most ``rate_limit_calls`` calls per ``rate_limit_period`` seconds
    and answers 429 beyond that. ``host_aliases`` go to the middleware (``python -m
    example_app`` declares ``localhost:PORT`` as ``127.0.0.1:PORT``).
    """
    if token is None:
        token = token_from_env()
    if len(token) < MIN_TOKEN_LENGTH:
        # Checked here: Starlette builds the middleware, which checks it too, on the first call.
        raise ConfigError(
            f"token ({TOKEN_VARIABLE}): at least {MIN_TOKEN_LENGTH} characters, got {len(token)}"
        )
    if cache is None:
        cache = cache_from_env()
    latency = _latency_from_env() if upstream_latency is None else upstream_latency
    upstream = QuotesUpstream(latency, RateLimiter(rate_limit_calls, rate_limit_period))
    # A real service keeps these in a database; the dict is per process.
    users: dict[int, User] = {
        1: User(id=1, name="Ada Lovelace", email="ada@example.com"),
        2: User(id=2, name="Grace Hopper", email="grace@example.com"),
        3: User(id=3, name="Alan Turing", email="alan@example.com"),
    }
    next_id = max(users) + 1
    the_cache = cache

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await the_cache.aclose()

    app = FastAPI(
        title="redis-cache-middleware example",
        summary="Stock quotes from a slow upstream and a read-heavy users API, cached in Redis.",
        lifespan=lifespan,
    )
    app.state.cache = cache
    app.state.upstream = upstream
    app.state.token = token
    app.add_middleware(
        CacheMiddleware,
        cache=cache,
        default_ttl=DEFAULT_TTL,
        bypass_header=BYPASS_HEADER,
        bypass_token=token,
        purge_token=token,
        purge_path=PURGE_PATH,
        host_aliases=dict(host_aliases or {}),
    )

    async def purge(*urls: str) -> None:
        """Drop every cached variant of these URLs.

        A failed purge is logged, not raised: the write itself has succeeded, and the stale
        entry expires by its TTL. Only the URLs as this request's client spelled the host are
        purged (``localhost`` and ``127.0.0.1`` are different cache keys), and query-string
        variants such as ``/users?page=2`` would need purging one by one.
        """
        for url in urls:
            try:
                removed = await the_cache.purge_url(url)
            except RedisError as exc:
                logger.warning("could not purge %s (%s); it expires by its TTL", url, exc)
            else:
                logger.debug("purged %s (%d entries)", url, removed)

    def user_urls(request: Request, user_id: int) -> tuple[str, str]:
        return (
            str(request.url_for("get_user", user_id=user_id)),
            str(request.url_for("list_users")),
        )

    @app.get("/", name="index")
    async def index() -> Index:
        return INDEX

    @app.get("/quotes/{symbol}", name="get_quote")
    async def get_quote(
        symbol: Annotated[str, Path(pattern=SYMBOL_PATTERN, description="1-10 letters")],
        response: Response,
    ) -> Quote:
        try:
            quote = await upstream.fetch(symbol.upper())
        except RateLimited as exc:
            # 429 is not cacheable, so the next request tries the upstream again.
            raise HTTPException(
                status_code=status.HTTP_429_TOO_MANY_REQUESTS,
                detail="upstream rate limit reached",
                headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))},
            ) from None
        response.headers["Cache-Control"] = QUOTE_CACHE_CONTROL
        return quote

    @app.get("/upstream-calls", name="upstream_calls")
    async def upstream_calls(response: Response) -> UpstreamCalls:
        response.headers["Cache-Control"] = "no-store"
        return UpstreamCalls(calls=upstream.calls)

    @app.get("/users", name="list_users")
    async def list_users(response: Response) -> list[User]:
        response.headers["Cache-Control"] = USERS_CACHE_CONTROL
        return [users[user_id] for user_id in sorted(users)]

    @app.get("/users/{user_id}", name="get_user")
    async def get_user(user_id: int, response: Response) -> User:
        user = users.get(user_id)
        if user is None:
            # Cached for DEFAULT_TTL like any 404; creating the user purges it.
            raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="no such user")
        response.headers["Cache-Control"] = USERS_CACHE_CONTROL
        return user

    @app.post("/users", name="create_user", status_code=status.HTTP_201_CREATED)
    async def create_user(body: UserIn, request: Request, response: Response) -> User:
        nonlocal next_id
        user = User(id=next_id, **body.model_dump())
        next_id += 1
        users[user.id] = user
        user_url, list_url = user_urls(request, user.id)
        await purge(user_url, list_url)
        response.headers["Location"] = user_url
        return user

    @app.put("/users/{user_id}", name="replace_user")
    async def replace_user(user_id: int, body: UserIn, request: Request) -> User:
        if user_id not in users:
            raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="no such user")
        user = User(id=user_id, **body.model_dump())
        users[user_id] = user
        await purge(*user_urls(request, user_id))
        return user

    @app.delete("/users/{user_id}", name="delete_user", status_code=status.HTTP_204_NO_CONTENT)
    async def delete_user(user_id: int, request: Request) -> Response:
        if users.pop(user_id, None) is None:
            raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="no such user")
        await purge(*user_urls(request, user_id))
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return app
