"""HEAD: a miss goes to the app as a GET (as Varnish does), the answer is stored, and the
client gets the GET's status and headers without a body; hits answer HEAD from the GET entry.

The apps here route GET only, as FastAPI does (``@app.get`` answers a HEAD 405): a HEAD that
reached them as a HEAD would fail.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, RedisCache
from redis_cache_middleware.respond import empty_receive

from .helpers import TEST_TIMEOUT, http_scope

pytestmark = pytest.mark.anyio

BODY = b"the whole page, " * 64


class GetOnly:
    """An app routing GET only: counts calls and records each method and Range it saw."""

    def __init__(self, delay: float = 0.0, headers: dict[str, str] | None = None) -> None:
        self.calls: Counter[str] = Counter()
        self.methods: list[str] = []
        self.ranges: list[str | None] = []
        self.delay = delay
        self.headers = {"cache-control": "max-age=60", **(headers or {})}

    async def page(self, request: Request) -> Response:
        self.calls[request.url.path] += 1
        self.methods.append(request.method)
        self.ranges.append(request.headers.get("range"))
        await asyncio.sleep(self.delay)
        return Response(BODY, headers=self.headers, media_type="text/plain")

    async def stream(self, request: Request) -> Response:
        self.calls[request.url.path] += 1
        self.methods.append(request.method)

        async def chunks() -> Any:
            for part in (b"one,", b"two,", b"three"):
                yield part

        return StreamingResponse(chunks(), headers=self.headers, media_type="text/plain")

    def fastapi(self) -> FastAPI:
        app = FastAPI()
        app.add_api_route("/stream", self.stream, methods=["GET"])
        app.add_api_route("/{path:path}", self.page, methods=["GET"])
        return app

    def starlette(self) -> Starlette:
        # Starlette routes HEAD along with GET; refuse it, as FastAPI does.
        async def get_only(request: Request) -> Response:
            if request.method != "GET":
                return PlainTextResponse("GET only", status_code=405)
            if request.url.path == "/stream":
                return await self.stream(request)
            return await self.page(request)

        return Starlette(routes=[Route("/{path:path}", get_only, methods=["GET"])])


def client_for(app: Any, cache: RedisCache, **options: Any) -> httpx.AsyncClient:
    options.setdefault("timeout", TEST_TIMEOUT)
    app.add_middleware(CacheMiddleware, cache=cache, **options)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture(params=["starlette", "fastapi"])
def origin_app(request: pytest.FixtureRequest) -> tuple[GetOnly, Any]:
    origin = GetOnly()
    return origin, origin.fastapi() if request.param == "fastapi" else origin.starlette()


async def asgi_call(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    """Call an ASGI app with one empty-bodied request whose client then stays (a streamed
    answer listens for a disconnect); return every message it sent."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, empty_receive(), send)
    return sent


def without_cache_fields(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in response.headers.raw if k.lower() not in (b"age", b"cache-status")]


async def test_the_apps_refuse_head_without_the_cache(origin_app: tuple[GetOnly, Any]) -> None:
    # The premise: without the cache, these apps answer a HEAD 405.
    _, app = origin_app
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.head("/p")).status_code == 405


async def test_head_miss_goes_to_the_app_as_a_get_and_fills_the_cache(
    cache: RedisCache, origin_app: tuple[GetOnly, Any]
) -> None:
    origin, app = origin_app
    async with client_for(app, cache) as client:
        head_miss = await client.head("/p")
        get = await client.get("/p")
        head_hit = await client.head("/p")
    assert head_miss.status_code == get.status_code == head_hit.status_code == 200
    assert origin.methods == ["GET"]
    assert head_miss.headers["cache-status"] == "redis-cache; fwd=uri-miss; fwd-status=200; stored"
    assert get.headers["cache-status"].startswith("redis-cache; hit; ttl=")
    assert head_hit.headers["cache-status"].startswith("redis-cache; hit; ttl=")
    assert get.content == BODY
    assert head_miss.content == head_hit.content == b""
    # The GET's headers, Content-Length of the whole body included.
    assert head_miss.headers["content-length"] == str(len(BODY))
    assert without_cache_fields(head_miss) == without_cache_fields(get)
    assert without_cache_fields(head_hit) == without_cache_fields(get)


async def test_head_miss_sends_the_client_no_body_bytes(cache: RedisCache) -> None:
    # Over raw ASGI: whatever a server would do with them, no body bytes are sent for a HEAD.
    origin = GetOnly()
    app = CacheMiddleware(origin.fastapi(), cache=cache, timeout=TEST_TIMEOUT)
    for path in ("/p", "/stream"):
        sent = await asgi_call(app, {**http_scope(path), "method": "HEAD"})
        assert sent[0]["status"] == 200, path
        assert [m["type"] for m in sent[1:]] and all(
            m["type"] == "http.response.body" and m.get("body", b"") == b"" for m in sent[1:]
        ), path
        assert not sent[-1].get("more_body", False)
    # Both were stored whole: a GET is a hit with the whole body.
    for path, body in (("/p", BODY), ("/stream", b"one,two,three")):
        sent = await asgi_call(app, http_scope(path))
        headers = dict(sent[0]["headers"])
        assert headers[b"cache-status"].startswith(b"redis-cache; hit;"), path
        assert b"".join(m.get("body", b"") for m in sent[1:]) == body
    assert origin.methods == ["GET", "GET"]


async def test_head_miss_ignores_range_and_stores_the_whole_200(cache: RedisCache) -> None:
    # Range handling is defined for GET only (RFC 9110 14.2): the app sees no Range.
    origin = GetOnly()
    async with client_for(origin.fastapi(), cache) as client:
        head = await client.head("/r", headers={"range": "bytes=0-9", "if-range": '"x"'})
        get = await client.get("/r")
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(BODY))
    assert origin.ranges == [None]
    assert get.content == BODY and "hit" in get.headers["cache-status"]


async def test_head_answer_the_cache_may_not_store_still_has_no_body(cache: RedisCache) -> None:
    origin = GetOnly(headers={"cache-control": "private"})
    async with client_for(origin.fastapi(), cache) as client:
        head = await client.head("/private")
        again = await client.head("/private")
    assert head.status_code == again.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(BODY))
    assert head.headers["cache-status"].endswith("detail=private")
    assert origin.methods == ["GET", "GET"]


async def test_concurrent_head_and_get_misses_make_one_app_call(cache: RedisCache) -> None:
    origin = GetOnly(delay=0.2)
    async with client_for(origin.fastapi(), cache, timeout=1.0) as client:
        requests = [client.head("/cold") if i % 2 else client.get("/cold") for i in range(20)]
        responses = await asyncio.gather(*requests)
    assert origin.calls["/cold"] == 1
    assert {r.status_code for r in responses} == {200}
    statuses = [r.headers["cache-status"] for r in responses]
    assert sum("stored" in s for s in statuses) == 1
    assert sum("collapsed" in s for s in statuses) == 19
    for response in responses:
        expected = b"" if response.request.method == "HEAD" else BODY
        assert response.content == expected
        assert response.headers["content-length"] == str(len(BODY))


async def test_head_with_no_cache_refills_through_a_get(cache: RedisCache) -> None:
    origin = GetOnly()
    async with client_for(origin.fastapi(), cache) as client:
        await client.get("/n")
        reload = await client.head("/n", headers={"cache-control": "no-cache"})
    assert reload.status_code == 200
    assert reload.headers["cache-status"].startswith("redis-cache; fwd=request; fwd-status=200")
    assert reload.headers["cache-status"].endswith("stored")
    assert origin.methods == ["GET", "GET"]


async def test_head_the_cache_does_not_handle_reaches_the_app_as_a_head(
    cache: RedisCache,
) -> None:
    # A rule that never caches: the app sees the request as sent, HEAD included.
    origin = GetOnly()
    async with client_for(origin.starlette(), cache, rules={"/never/*": None}) as client:
        head = await client.head("/never/p")
    assert head.status_code == 405
    assert "detail=rule" in head.headers["cache-status"]
    assert origin.methods == []
