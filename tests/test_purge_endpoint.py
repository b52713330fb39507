"""``PurgeEndpoint`` driven directly through httpx, entries seeded through the middleware."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import httpx
import pytest
import redis.exceptions

from redis_cache_middleware import ConfigError, RedisCache
from redis_cache_middleware._types import Message
from redis_cache_middleware.purge import MAX_BODY, PurgeEndpoint, is_purge_request

from .helpers import Origin, Spec, make_client

pytestmark = pytest.mark.anyio

TOKEN = "purge-token-0123456789abcdef"
AUTH = {"authorization": f"Bearer {TOKEN}"}
JSON_HEADERS = {"content-type": "application/json", "cache-control": "no-store"}


# -- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def fake_cache() -> RedisCache:
    """A cache on fakeredis, for the cases that never reach Redis."""
    return RedisCache(fakeredis.FakeAsyncRedis(), namespace="purge-auth")


def purge_client(cache: RedisCache) -> httpx.AsyncClient:
    endpoint = PurgeEndpoint(cache, token=TOKEN)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=endpoint), base_url="http://testserver"
    )


async def post(cache: RedisCache, payload: object, **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", AUTH)
    async with purge_client(cache) as client:
        return await client.post("/_cache/purge", json=payload, headers=headers, **kwargs)


def origin_with_tags() -> Origin:
    return Origin(
        specs={
            "/t1": Spec(headers=[("surrogate-key", "a b")]),
            "/t2": Spec(headers=[("surrogate-key", "b")]),
            "/t3": Spec(headers=[("surrogate-key", "c")]),
        }
    )


async def seed(cache: RedisCache, urls: list[str], origin: Origin | None = None) -> Origin:
    """GET each URL through the middleware and check it was stored."""
    origin = origin or Origin()
    async with make_client(cache, origin, default_ttl=60) as client:
        for url in urls:
            response = await client.get(url)
            assert response.headers["cache-status"].endswith("; stored"), url
    return origin


async def cache_states(cache: RedisCache, urls: list[str], origin: Origin) -> list[str]:
    """Return "hit" or "miss" for each URL, as a GET through the middleware sees it."""
    states = []
    async with make_client(cache, origin, default_ttl=60) as client:
        for url in urls:
            status = (await client.get(url)).headers["cache-status"]
            states.append("hit" if "; hit;" in status else "miss")
    return states


def assert_json(response: httpx.Response, status: int, body: object) -> None:
    assert response.status_code == status
    assert response.json() == body
    for name, value in JSON_HEADERS.items():
        assert response.headers[name] == value
    assert response.headers["content-length"] == str(len(response.content))


# -- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["", None, b"bytes-token-0123456789"])
def test_token_must_be_a_non_empty_string(fake_cache: RedisCache, token: Any) -> None:
    with pytest.raises(ConfigError, match="token"):
        PurgeEndpoint(fake_cache, token=token)


# -- authentication -------------------------------------------------------------------------


async def test_missing_token_is_401(fake_cache: RedisCache) -> None:
    response = await post(fake_cache, {"all": True}, headers={})
    assert_json(response, 401, {})
    assert response.headers["www-authenticate"] == "Bearer"


async def test_wrong_token_is_401(fake_cache: RedisCache) -> None:
    response = await post(fake_cache, {"all": True}, headers={"authorization": "Bearer nope"})
    assert_json(response, 401, {})
    assert response.headers["www-authenticate"] == "Bearer"


async def test_missing_and_wrong_token_answer_identically(fake_cache: RedisCache) -> None:
    missing = await post(fake_cache, {"all": True}, headers={})
    wrong = await post(fake_cache, {"all": True}, headers={"authorization": f"Bearer {TOKEN}x"})
    assert missing.status_code == wrong.status_code == 401
    assert missing.content == wrong.content == b"{}"
    assert missing.headers.raw == wrong.headers.raw


@pytest.mark.parametrize(
    "value",
    [
        f"Basic {TOKEN}",
        f"Bearer{TOKEN}",
        "Bearer ",
        TOKEN,
        f"Bearer {TOKEN[:-1]}",
    ],
)
async def test_malformed_authorization_is_401(fake_cache: RedisCache, value: str) -> None:
    response = await post(fake_cache, {}, headers={"authorization": value})
    assert_json(response, 401, {})


async def test_bearer_scheme_is_case_insensitive(fake_cache: RedisCache) -> None:
    response = await post(fake_cache, {}, headers={"authorization": f"bearer {TOKEN}"})
    assert_json(response, 200, {"purged": 0})


async def test_two_authorization_headers_are_401(fake_cache: RedisCache) -> None:
    async with purge_client(fake_cache) as client:
        response = await client.post(
            "/",
            json={},
            headers=[("authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {TOKEN}")],
        )
    assert_json(response, 401, {})


async def test_right_token_is_200(fake_cache: RedisCache) -> None:
    assert_json(await post(fake_cache, {}), 200, {"purged": 0})


async def test_token_compared_with_compare_digest_every_time(
    fake_cache: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    await post(fake_cache, {}, headers={})
    await post(fake_cache, {}, headers={"authorization": "Bearer wrong"})
    await post(fake_cache, {}, headers={"authorization": "Basic abc"})
    await post(fake_cache, {})
    expected = TOKEN.encode()
    assert calls == [(b"", expected), (b"wrong", expected), (b"", expected), (expected, expected)]


async def test_auth_checked_before_the_body_is_read(fake_cache: RedisCache) -> None:
    endpoint = PurgeEndpoint(fake_cache, token=TOKEN)
    sent: list[Message] = []

    async def receive() -> Message:
        raise AssertionError("the body was read before the token was checked")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/_cache/purge",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-length", b"999999")],
    }
    await endpoint(scope, receive, send)
    assert sent[0]["status"] == 401
    assert sent[1]["body"] == b"{}"


async def test_unauthenticated_oversized_body_is_401_not_413(fake_cache: RedisCache) -> None:
    async with purge_client(fake_cache) as client:
        response = await client.post("/", content=b"x" * (MAX_BODY + 1))
    assert_json(response, 401, {})


# -- purging by URL, tag, prefix, all -------------------------------------------------------


async def test_urls_remove_exactly_those_urls(cache: RedisCache) -> None:
    urls = ["/a", "/a?x=1", "/b"]
    origin = await seed(cache, urls)
    response = await post(cache, {"urls": ["http://testserver/a", "http://testserver/b"]})
    assert_json(response, 200, {"purged": 2})
    assert await cache_states(cache, urls, origin) == ["miss", "hit", "miss"]


async def test_urls_remove_every_variant(cache: RedisCache) -> None:
    origin = Origin(specs={"/v": Spec(headers=[("vary", "accept-language")])})
    async with make_client(cache, origin, default_ttl=60) as client:
        for language in ("en", "fr", "de"):
            await client.get("/v", headers={"accept-language": language})
    response = await post(cache, {"urls": ["http://testserver/v"]})
    assert_json(response, 200, {"purged": 3})


async def test_urls_not_cached_purge_nothing(cache: RedisCache) -> None:
    origin = await seed(cache, ["/a"])
    response = await post(cache, {"urls": ["http://testserver/nothing", "http://other/a"]})
    assert_json(response, 200, {"purged": 0})
    assert await cache_states(cache, ["/a"], origin) == ["hit"]


async def test_tags_remove_entries_with_any_tag(cache: RedisCache) -> None:
    urls = ["/t1", "/t2", "/t3"]
    origin = await seed(cache, urls, origin_with_tags())
    response = await post(cache, {"tags": ["b"]})
    assert_json(response, 200, {"purged": 2})
    assert await cache_states(cache, urls, origin) == ["miss", "miss", "hit"]


async def test_several_tags_in_one_request(cache: RedisCache) -> None:
    urls = ["/t1", "/t2", "/t3"]
    origin = await seed(cache, urls, origin_with_tags())
    response = await post(cache, {"tags": ["a", "c", "unknown"]})
    assert_json(response, 200, {"purged": 2})
    assert await cache_states(cache, urls, origin) == ["miss", "hit", "miss"]


async def test_path_prefix_is_segment_wise_on_every_host(cache: RedisCache) -> None:
    urls = [
        "/users",
        "/users?page=2",
        "/users/1",
        "/users2",
        "/other/users",
        "http://other.example/users/9",
    ]
    origin = await seed(cache, urls)
    response = await post(cache, {"prefixes": ["/users"]})
    assert_json(response, 200, {"purged": 4})
    states = await cache_states(cache, urls, origin)
    assert states == ["miss", "miss", "miss", "hit", "hit", "miss"]


async def test_url_prefix_is_that_host_only(cache: RedisCache) -> None:
    urls = ["http://testserver/users/1", "http://other.example/users/1"]
    origin = await seed(cache, urls)
    response = await post(cache, {"prefixes": ["http://other.example/users"]})
    assert_json(response, 200, {"purged": 1})
    assert await cache_states(cache, urls, origin) == ["hit", "miss"]


async def test_all_clears_the_namespace(cache: RedisCache) -> None:
    urls = ["/a", "/b", "http://other.example/c"]
    origin = await seed(cache, urls)
    response = await post(cache, {"all": True})
    assert_json(response, 200, {"purged": 0, "cleared": True})
    assert await cache_states(cache, urls, origin) == ["miss", "miss", "miss"]


async def test_all_false_clears_nothing(cache: RedisCache) -> None:
    origin = await seed(cache, ["/a"])
    assert_json(await post(cache, {"all": False}), 200, {"purged": 0})
    assert await cache_states(cache, ["/a"], origin) == ["hit"]


async def test_fields_combine_and_counts_add_up(cache: RedisCache) -> None:
    urls = ["/a", "/t1", "/t2", "/t3", "/p/1", "/p/2", "/z"]
    origin = await seed(cache, urls, origin_with_tags())
    response = await post(
        cache, {"urls": ["http://testserver/a"], "tags": ["a"], "prefixes": ["/p"]}
    )
    assert_json(response, 200, {"purged": 4})
    states = await cache_states(cache, urls, origin)
    assert states == ["miss", "miss", "hit", "hit", "miss", "miss", "hit"]


async def test_empty_object_purges_nothing(cache: RedisCache) -> None:
    origin = await seed(cache, ["/a"])
    assert_json(await post(cache, {}), 200, {"purged": 0})
    assert await cache_states(cache, ["/a"], origin) == ["hit"]


# -- the PURGE method ---------------------------------------------------------------------


async def test_purge_method_removes_the_request_url(cache: RedisCache) -> None:
    urls = ["/a?x=1", "/a", "/a?x=2"]
    origin = await seed(cache, urls)
    async with purge_client(cache) as client:
        response = await client.request("PURGE", "/a?x=1", headers=AUTH)
    assert_json(response, 200, {"purged": 1})
    assert await cache_states(cache, urls, origin) == ["miss", "hit", "hit"]


async def test_purge_method_uses_the_host_header(cache: RedisCache) -> None:
    urls = ["http://testserver/a", "http://other.example/a"]
    origin = await seed(cache, urls)
    async with purge_client(cache) as client:
        response = await client.request("PURGE", "http://other.example/a", headers=AUTH)
    assert_json(response, 200, {"purged": 1})
    assert await cache_states(cache, urls, origin) == ["hit", "miss"]


@pytest.mark.parametrize("url", ["/caf%C3%A9/100%2541?q=a%26b", "/what%3F/x%23y", "/a%2Fb?c=%2F"])
async def test_purge_method_with_encoded_path(cache: RedisCache, url: str) -> None:
    origin = await seed(cache, [url, "/other"])
    async with purge_client(cache) as client:
        response = await client.request("PURGE", url, headers=AUTH)
    assert_json(response, 200, {"purged": 1})
    assert await cache_states(cache, [url, "/other"], origin) == ["miss", "hit"]


async def test_purge_method_with_raw_hash_in_query(cache: RedisCache) -> None:
    # httpx never sends a raw "#", but an ASGI server may pass one on: it is data, not a
    # fragment, and "x=#" is the same query parameter as "x=%23".
    origin = await seed(cache, ["/q?x=%23"])
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "PURGE",
        "scheme": "http",
        "path": "/q",
        "query_string": b"x=#",
        "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {TOKEN}".encode())],
    }
    await PurgeEndpoint(cache, token=TOKEN)(scope, receive, send)
    assert sent[0]["status"] == 200
    assert sent[1]["body"] == b'{"purged":1}'
    assert await cache_states(cache, ["/q?x=%23"], origin) == ["miss"]


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ([], "host: a PURGE request needs exactly one Host header"),
        ([(b"host", b"a"), (b"host", b"b")], "host: a PURGE request needs exactly one Host header"),
        ([(b"host", b"evil/path")], "host: malformed Host header 'evil/path'"),
        ([(b"host", b"user@host")], "host: malformed Host header 'user@host'"),
    ],
)
async def test_purge_method_needs_one_well_formed_host(
    fake_cache: RedisCache, headers: list[tuple[bytes, bytes]], error: str
) -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        raise AssertionError("a PURGE body is never read")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "PURGE",
        "path": "/a",
        "query_string": b"",
        "headers": [*headers, (b"authorization", f"Bearer {TOKEN}".encode())],
    }
    await PurgeEndpoint(fake_cache, token=TOKEN)(scope, receive, send)
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"]) == {"error": error}


async def test_purge_method_needs_the_token(cache: RedisCache) -> None:
    origin = await seed(cache, ["/a"])
    async with purge_client(cache) as client:
        response = await client.request("PURGE", "/a")
    assert_json(response, 401, {})
    assert await cache_states(cache, ["/a"], origin) == ["hit"]


# -- bad requests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"urls": [', "body: malformed JSON"),
        (b"", "body: malformed JSON"),
        (b"\xff\xfe\xfa", "body: malformed JSON"),
        (b"[]", "body: expected a JSON object, got a list"),
        (b'"all"', "body: expected a JSON object, got a string"),
        (b'{"url": []}', "'url': unknown field (expected urls, tags, prefixes, all)"),
        (b'{"urls": "http://testserver/a"}', "urls: expected a list of strings, got a string"),
        (b'{"urls": [1]}', "urls[0]: expected a string, got a number"),
        (
            b'{"urls": ["http://testserver/a", "/a"]}',
            "urls[1]: expected an absolute http(s) URL, got '/a'",
        ),
        (
            b'{"urls": ["ftp://testserver/a"]}',
            "urls[0]: expected an absolute http(s) URL, got 'ftp://testserver/a'",
        ),
        (b'{"urls": ["http://h:x/a"]}', "urls[0]: malformed port in 'http://h:x/a'"),
        (
            b'{"urls": ["http://u:p@h/a"]}',
            "urls[0]: a URL with user info names no cached URL, got 'http://u:p@h/a'",
        ),
        (b'{"tags": {"a": 1}}', "tags: expected a list of strings, got an object"),
        (b'{"tags": [""]}', "tags[0]: expected a non-empty string, got ''"),
        (b'{"tags": [null]}', "tags[0]: expected a non-empty string, got None"),
        (b'{"prefixes": [true]}', "prefixes[0]: expected a string, got a boolean"),
        (
            b'{"prefixes": ["users"]}',
            "prefixes[0]: expected a path starting with '/' or an absolute http(s) URL, "
            "got 'users'",
        ),
        (
            b'{"prefixes": ["/users?page=1"]}',
            "prefixes[0]: a prefix is a path, without query, got '/users?page=1'",
        ),
        (b'{"all": "yes"}', "all: expected true or false, got a string"),
        (b'{"all": 1}', "all: expected true or false, got a number"),
        (b'{"all": null}', "all: expected true or false, got null"),
    ],
)
async def test_malformed_body_is_400_naming_the_field(
    fake_cache: RedisCache, body: bytes, error: str
) -> None:
    async with purge_client(fake_cache) as client:
        response = await client.post("/", content=body, headers=AUTH)
    assert response.status_code == 400
    message = response.json()["error"]
    if error == "body: malformed JSON":  # followed by the decoder's own words
        assert message.startswith(f"{error} ("), message
    else:
        assert message == error
    assert set(response.json()) == {"error"}
    for name, value in JSON_HEADERS.items():
        assert response.headers[name] == value


async def test_one_bad_value_purges_nothing(cache: RedisCache) -> None:
    origin = await seed(cache, ["/a"])
    response = await post(cache, {"urls": ["http://testserver/a"], "tags": [3]})
    assert_json(response, 400, {"error": "tags[0]: expected a non-empty string, got 3"})
    assert await cache_states(cache, ["/a"], origin) == ["hit"]


async def test_body_at_the_limit_is_read(fake_cache: RedisCache) -> None:
    body = b'{"tags": ["' + b"x" * (MAX_BODY - 14) + b'"]}'
    assert len(body) == MAX_BODY
    async with purge_client(fake_cache) as client:
        response = await client.post("/", content=body, headers=AUTH)
    assert_json(response, 200, {"purged": 0})


async def test_content_length_over_64_kib_is_413(fake_cache: RedisCache) -> None:
    async with purge_client(fake_cache) as client:
        response = await client.post("/", content=b" " * (MAX_BODY + 1), headers=AUTH)
    assert_json(response, 413, {"error": "body: larger than 65536 bytes"})


async def test_content_length_over_64_kib_is_413_before_reading(
    fake_cache: RedisCache,
) -> None:
    endpoint = PurgeEndpoint(fake_cache, token=TOKEN)
    sent: list[Message] = []

    async def receive() -> Message:
        raise AssertionError("the body was read despite its Content-Length")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "headers": [
            (b"authorization", f"Bearer {TOKEN}".encode()),
            (b"content-length", str(MAX_BODY + 1).encode()),
        ],
    }
    await endpoint(scope, receive, send)
    assert sent[0]["status"] == 413
    assert sent[1]["body"] == b'{"error":"body: larger than 65536 bytes"}'


async def test_streamed_body_over_64_kib_is_413(fake_cache: RedisCache) -> None:
    chunks_sent = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(10):
            chunks_sent += 1
            yield b" " * 16384

    async with purge_client(fake_cache) as client:
        request = client.build_request("POST", "/", content=stream(), headers=AUTH)
        assert "content-length" not in request.headers
        response = await client.send(request)
    assert_json(response, 413, {"error": "body: larger than 65536 bytes"})


async def test_client_gone_before_body_ends_gets_no_answer(fake_cache: RedisCache) -> None:
    endpoint = PurgeEndpoint(fake_cache, token=TOKEN)
    messages: list[Message] = [
        {"type": "http.request", "body": b'{"all"', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {TOKEN}".encode())],
    }
    await endpoint(scope, receive, send)
    assert sent == []


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"])
async def test_other_methods_are_405(fake_cache: RedisCache, method: str) -> None:
    async with purge_client(fake_cache) as client:
        response = await client.request(method, "/_cache/purge", headers=AUTH)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST, PURGE"
    assert response.headers["cache-control"] == "no-store"
    if method == "HEAD":
        assert response.content == b""
    else:
        assert response.json() == {"error": "method not allowed"}


async def test_head_405_sends_no_body(fake_cache: RedisCache) -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        raise AssertionError("not read")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "HEAD", "path": "/", "query_string": b"", "headers": []}
    await PurgeEndpoint(fake_cache, token=TOKEN)(scope, receive, send)
    assert sent[0]["status"] == 405
    assert (b"content-length", b"30") in sent[0]["headers"]  # {"error":"method not allowed"}
    assert sent[1]["body"] == b""


# -- Redis failures -------------------------------------------------------------------------


def _broken(*args: Any, **kwargs: Any) -> Any:
    raise redis.exceptions.ConnectionError("Connection refused")


@pytest.mark.parametrize(
    ("method", "payload"),
    [
        ("purge_url", {"urls": ["http://testserver/a"]}),
        ("purge_tag", {"tags": ["a"]}),
        ("purge_prefix", {"prefixes": ["/a"]}),
        ("clear", {"all": True}),
    ],
)
async def test_redis_error_is_503_and_a_warning(
    cache: RedisCache,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    method: str,
    payload: dict[str, object],
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        _broken()

    monkeypatch.setattr(cache, method, broken)
    with caplog.at_level(logging.WARNING, logger="redis_cache_middleware"):
        response = await post(cache, payload)
    assert_json(response, 503, {"error": "redis unavailable"})
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "ConnectionError: Connection refused" in warnings[0].getMessage()
    assert warnings[0].exc_info is None


async def test_redis_down_on_purge_method_is_503(
    cache: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        _broken()

    monkeypatch.setattr(cache, "purge_url", broken)
    async with purge_client(cache) as client:
        response = await client.request("PURGE", "/a", headers=AUTH)
    assert_json(response, 503, {"error": "redis unavailable"})


# -- is_purge_request ---------------------------------------------------------------------


def _scope(method: str, path: str, kind: str = "http") -> dict[str, object]:
    return {"type": kind, "method": method, "path": path}


@pytest.mark.parametrize(
    ("scope", "purge_path", "expected"),
    [
        (_scope("PURGE", "/anything"), "/_cache/purge", True),
        (_scope("PURGE", "/anything"), None, True),
        (_scope("POST", "/_cache/purge"), "/_cache/purge", True),
        (_scope("GET", "/_cache/purge"), "/_cache/purge", True),
        (_scope("GET", "/_cache/purge/"), "/_cache/purge", False),
        (_scope("POST", "/other"), "/_cache/purge", False),
        (_scope("GET", "/_cache/purge"), None, False),
        (_scope("purge", "/x"), "/_cache/purge", False),
        ({"type": "websocket", "path": "/_cache/purge"}, "/_cache/purge", False),
        ({"type": "lifespan"}, "/_cache/purge", False),
    ],
)
def test_is_purge_request(scope: dict[str, object], purge_path: str | None, expected: bool) -> None:
    assert is_purge_request(scope, purge_path) is expected
