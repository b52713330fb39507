"""Hostile input: cache poisoning, privacy between users, namespace isolation, the purge
endpoint's authentication, bounds, and connections over TLS and with an ACL user.

docs/security.md states each claim and names the test here that shows it.
"""

from __future__ import annotations

import asyncio
import hmac
import shutil
import socket
import ssl
import subprocess
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from redis.asyncio.connection import SSLConnection
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, ConfigError, RedisCache, keys
from redis_cache_middleware._types import Message

from .cluster_fixtures import unavailable
from .conftest import RedisServer, free_port
from .helpers import Origin as HelperOrigin
from .helpers import Spec, asgi_call, hit_raw, http_scope, make_client, uvicorn_on_loopback

pytestmark = pytest.mark.anyio

SITE = "shop.example"
EVIL = "evil.example"


# -- an origin that can reflect request data, and a client for it -------------------------


@dataclass
class Origin:
    """Answers every path with ``render(request)``, ``headers`` added; counts calls.

    The origin of the attack tests: ``render`` is any function of the request, so a test
    reflects attacker-controlled input (a Host, an X-Forwarded-Host, a cookie, the query)
    into the body as a vulnerable app would. ``helpers.Origin`` echoes named headers in a
    fixed form only; tests here that need its exact bodies, or both frameworks, use it as
    ``HelperOrigin``. ``tests/attack_app.py`` is the same kind of app for a real uvicorn.
    """

    render: Callable[[Request], str] = lambda r: f"{r.method} {r.url.path} "
    headers: list[tuple[str, str]] | None = None
    calls: Counter[str] = field(default_factory=Counter)

    async def respond(self, request: Request) -> Response:
        self.calls[request.url.path] += 1
        body = self.render(request) + f" call={self.calls[request.url.path]}"
        response = Response(body.encode(), media_type="text/plain")
        for name, value in self.headers if self.headers is not None else [("x-o", "1")]:
            response.headers.append(name, value)
        return response


def app_for(origin: Origin) -> Starlette:
    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PURGE"]
    return Starlette(routes=[Route("/{path:path}", origin.respond, methods=methods)])


def client_for(cache: RedisCache, origin: Origin, **options: Any) -> httpx.AsyncClient:
    app = app_for(origin)
    # A full second for Redis (not the 100 ms default): these tests are not about timeouts.
    app.add_middleware(
        CacheMiddleware, cache=cache, **{"default_ttl": 60, "timeout": 1.0, **options}
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{SITE}")


def status_of(response: httpx.Response) -> str:
    return str(response.headers.get("cache-status", ""))


def is_hit(response: httpx.Response) -> bool:
    return "; hit" in status_of(response)


async def namespace_keys(client: Any, namespace: str) -> list[bytes]:
    return [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]


async def stored_bytes(client: Any, namespace: str) -> bytes:
    """Return every field value of every hash in the namespace, joined: what Redis holds."""
    values: list[bytes] = []
    for key in await namespace_keys(client, namespace):
        if await client.type(key) == b"hash":
            values += (await client.hgetall(key)).values()
    return b"".join(values)


# -- cache poisoning: unkeyed headers ------------------------------------------------------

#: Headers that proxies and frameworks use to rewrite the URL, host, scheme or method, with
#: the URL an attacker would like the response to be stored under if the cache listened.
UNKEYED = [
    ("x-forwarded-host", EVIL, f"http://{EVIL}/page"),
    ("x-host", EVIL, f"http://{EVIL}/page"),
    ("x-forwarded-server", EVIL, f"http://{EVIL}/page"),
    ("forwarded", f"host={EVIL};proto=https", f"https://{EVIL}/page"),
    ("x-forwarded-proto", "https", f"https://{SITE}/page"),
    ("x-forwarded-scheme", "https", f"https://{SITE}/page"),
    ("x-forwarded-port", "8443", f"http://{SITE}:8443/page"),
    ("x-original-url", "/admin", f"http://{SITE}/admin"),
    ("x-rewrite-url", "/admin", f"http://{SITE}/admin"),
    ("x-forwarded-prefix", "/evil", f"http://{SITE}/evil/page"),
    ("x-http-method-override", "DELETE", f"http://{SITE}/page"),
    ("x-method-override", "PURGE", f"http://{SITE}/page"),
]


@pytest.mark.parametrize(("header", "value", "target"), UNKEYED, ids=[u[0] for u in UNKEYED])
async def test_unkeyed_headers_do_not_change_the_key(
    cache: RedisCache, header: str, value: str, target: str
) -> None:
    origin = Origin()
    async with client_for(cache, origin) as client:
        attack = await client.get("/page", headers={header: value})
        normal = await client.get("/page")
        calls = origin.calls["/page"]
        # The attacker's response is stored under the request's own URL, nowhere else...
        assert status_of(attack).endswith("; stored")
        assert is_hit(normal) and normal.content == attack.content
        assert len(await cache.inspect_url(f"http://{SITE}/page")) == 1
        if target != f"http://{SITE}/page":
            assert await cache.inspect_url(target) == []
            assert not is_hit(await client.get(target))
    # ...and a method override neither purged it nor made the request unsafe.
    assert calls == 1


async def test_method_override_on_a_post_is_not_answered_from_the_cache(cache: RedisCache) -> None:
    origin = Origin()
    async with client_for(cache, origin) as client:
        stored = await client.get("/page")
        post = await client.post("/page", headers={"x-http-method-override": "GET"})
        after = await client.get("/page")
    assert status_of(stored).endswith("; stored")
    # The POST went to the app (and, being unsafe, invalidated the GET it may have changed).
    assert post.text.startswith("POST /page") and "cache-status" not in post.headers
    assert not is_hit(after)
    assert origin.calls["/page"] == 3


async def test_host_header_is_part_of_the_key(cache: RedisCache, framework: str) -> None:
    # The app reflects the Host it was sent (as a link to itself would).
    origin = HelperOrigin(specs={"/page": Spec(echo_headers=("host",))})
    async with make_client(cache, origin, framework, default_ttl=60) as client:
        attack = await client.get("/page", headers={"host": EVIL})
        victim = await client.get("/page", headers={"host": SITE})
        victim_again = await client.get("/page", headers={"host": "SHOP.example:80"})
    assert EVIL in attack.text and status_of(attack).endswith("; stored")
    assert EVIL not in victim.text and not is_hit(victim)
    assert "fwd=uri-miss" in status_of(victim)
    # Case and the scheme's default port are the same origin: one entry.
    assert is_hit(victim_again) and victim_again.content == victim.content


@pytest.mark.parametrize("order", ["evil-first", "evil-last"])
async def test_duplicate_host_headers_cannot_poison_the_single_host_entry(
    cache: RedisCache, order: str
) -> None:
    # RFC 9112 3.2: a server must refuse several Host lines; h11 does, not every server does.
    # Starlette reads the first, the key once read the last: the evil-first response was
    # stored for shop.example. Now a request with several Host lines has a key of its own.
    origin = Origin(render=lambda r: f"<a href='http://{r.url.hostname}/login'>")
    hosts = [("host", EVIL), ("host", SITE)]
    if order == "evil-last":
        hosts.reverse()
    async with client_for(cache, origin) as client:
        attack = await client.get("/page", headers=hosts)
        victim = await client.get("/page", headers={"host": SITE})
        evil_alone = await client.get("/page", headers={"host": EVIL})
    assert status_of(attack).endswith("; stored")
    assert not is_hit(victim) and EVIL not in victim.text
    assert not is_hit(evil_alone)
    assert origin.calls["/page"] == 3


@pytest.mark.parametrize(
    "attack_hosts",
    [
        [EVIL],
        [f"www.{SITE}.{EVIL}"],  # a declared spelling as a prefix
        [f"x.www.{SITE}"],  # ...as a suffix
        [f"www.{SITE}:8080"],  # ...on a port it was not declared with
        [f"{EVIL}:80"],
        [EVIL, f"www.{SITE}"],  # two Host lines: the app reads the first
        [f"www.{SITE}", EVIL],
    ],
    ids=["evil", "alias-prefix", "alias-suffix", "alias-other-port", "evil-80", "two-a", "two-b"],
)
async def test_host_aliases_admit_only_the_declared_spellings(
    cache: RedisCache, attack_hosts: list[str]
) -> None:
    # host_aliases shares the site's entries with its declared spellings only: any other Host,
    # however close, keeps entries of its own, and never lands in the site's.
    origin = Origin(render=lambda r: f"<a href='http://{r.headers['host']}/login'>")
    aliases = {f"www.{SITE}": SITE}
    async with client_for(cache, origin, host_aliases=aliases) as client:
        attack = await client.get("/page", headers=[("host", h) for h in attack_hosts])
        victim = await client.get("/page", headers={"host": SITE})
        www = await client.get("/page", headers={"host": f"WWW.{SITE}:80"})
    assert status_of(attack).endswith("; stored")
    assert not is_hit(victim) and victim.text.startswith(f"<a href='http://{SITE}/login'>")
    assert is_hit(www) and www.content == victim.content
    assert origin.calls["/page"] == 2


def reflect_forwarded_host(request: Request) -> str:
    host = request.headers.get("x-forwarded-host") or request.headers["host"]
    return f"<script src='https://{host}/app.js'></script>"


async def test_reflected_unkeyed_header_poisons_others_without_vary_on(cache: RedisCache) -> None:
    # The documented risk: an app that reflects a header the key does not include.
    origin = Origin(render=reflect_forwarded_host)
    async with client_for(cache, origin) as client:
        await client.get("/page", headers={"x-forwarded-host": EVIL})
        victim = await client.get("/page")
    assert is_hit(victim) and EVIL in victim.text


@pytest.mark.parametrize("remedy", ["vary_on", "vary-header"])
async def test_vary_on_remedy_keeps_a_reflected_header_to_its_sender(
    cache: RedisCache, remedy: str
) -> None:
    origin = Origin(render=reflect_forwarded_host)
    options: dict[str, Any] = {}
    if remedy == "vary_on":
        options["vary_on"] = ["X-Forwarded-Host"]
    else:
        origin.headers = [("vary", "X-Forwarded-Host")]
    async with client_for(cache, origin, **options) as client:
        attack = await client.get("/page", headers={"x-forwarded-host": EVIL})
        victim = await client.get("/page")
        victim_again = await client.get("/page")
        attack_again = await client.get("/page", headers={"x-forwarded-host": EVIL})
    assert EVIL in attack.text and status_of(attack).endswith("; stored")
    assert EVIL not in victim.text and not is_hit(victim)
    assert is_hit(victim_again) and EVIL not in victim_again.text
    assert is_hit(attack_again) and EVIL in attack_again.text


async def test_get_with_a_body_is_passed_to_the_app_untouched(cache: RedisCache) -> None:
    # A "fat GET": the answer depends on a body no key holds. It is neither looked up,
    # nor stored, nor coalesced: the next plain GET never sees the attacker's body.
    async def respond(request: Request) -> Response:
        return Response(b"results for " + await request.body())

    app = Starlette(routes=[Route("/search", respond)])
    app.add_middleware(CacheMiddleware, cache=cache, default_ttl=60, timeout=1.0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{SITE}") as client:
        stored = await client.get("/search")
        attack = await client.request("GET", "/search", content=b"<script>evil()</script>")
        victim = await client.get("/search")
    assert status_of(stored).endswith("; stored")
    assert b"evil()" in attack.content and "cache-status" not in attack.headers
    assert is_hit(victim) and b"evil()" not in victim.content


@pytest.mark.parametrize(
    "framing",
    [[(b"content-length", b"5")], [(b"transfer-encoding", b"chunked")]],
    ids=["content-length", "chunked"],
)
async def test_get_with_a_slow_body_holds_no_one(
    cache: RedisCache, framing: list[tuple[bytes, bytes]]
) -> None:
    # A GET whose body never arrives must not hold the URL's fill: plain GETs for the
    # same cold URL are answered while it waits (before, they waited coalesce_timeout).
    arrived = asyncio.Event()
    never = asyncio.Event()

    async def respond(request: Request) -> Response:
        if request.headers.get("content-length") or request.headers.get("transfer-encoding"):
            arrived.set()
            await request.body()
        return Response(b"plain", headers={"cache-control": "max-age=60"})

    app = Starlette(routes=[Route("/slow", respond)])
    app.add_middleware(CacheMiddleware, cache=cache, timeout=1.0, coalesce_timeout=30)

    async def stalled_receive() -> Message:
        await never.wait()
        return {"type": "http.disconnect"}

    scope = http_scope("/slow", SITE)
    scope["headers"] = [*scope["headers"], *framing]
    fat = asyncio.ensure_future(app(scope, stalled_receive, _discard))
    await asyncio.wait_for(arrived.wait(), 5)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{SITE}") as client:
        answers = await asyncio.wait_for(
            asyncio.gather(*(client.get("/slow") for _ in range(5))), 5
        )
    fat.cancel()
    assert all(a.content == b"plain" for a in answers)


async def _discard(message: Message) -> None:
    pass


# -- cache poisoning: the query, as the client sent it -----------------------------------


async def raw_get(
    app: Any, path: str, query: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Send one GET as raw ASGI, the query bytes exactly as given; return the answer."""
    scope = http_scope(path, SITE)
    scope["query_string"] = query
    scope["headers"] = [*scope["headers"], *(headers or [])]
    sent = await asgi_call(app, scope)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


def canonical_app(cache: RedisCache, **options: Any) -> Starlette:
    """An app that reflects its canonical URL, as pages do in ``<link rel=canonical>``."""

    async def page(request: Request) -> Response:
        return Response(f'<link rel="canonical" href="{request.url}">', media_type="text/html")

    app = Starlette(routes=[Route("/p", page)])
    app.add_middleware(
        CacheMiddleware, cache=cache, **{"default_ttl": 60, "timeout": 1.0, **options}
    )
    return app


async def test_raw_and_escaped_query_do_not_share_a_key(cache: RedisCache) -> None:
    # A non-browser client sends the markup raw; a browser following the link sends it
    # escaped. Starlette's request.url keeps the raw query: two pages, two keys.
    app = canonical_app(cache)
    _, attack_headers, attack = await raw_get(app, "/p", b'x="><script>alert(1)</script>')
    _, victim_headers, victim = await raw_get(
        app, "/p", b"x=%22%3E%3Cscript%3Ealert(1)%3C/script%3E"
    )
    assert b"<script>" in attack and attack_headers["cache-status"].endswith("; stored")
    assert b"<script>" not in victim and "; hit" not in victim_headers["cache-status"]
    _, again_headers, again = await raw_get(app, "/p", b"x=%22%3E%3Cscript%3Ealert(1)%3C/script%3E")
    assert "; hit" in again_headers["cache-status"] and b"<script>" not in again


@pytest.mark.parametrize(
    ("stored", "other"),
    [
        (b"a=1&b=2", b"b=2&a=1"),
        (b"q=a+b", b"q=a%20b"),
        (b"q=%41", b"q=A"),
    ],
    ids=["order", "plus-or-escape", "escaped-letter"],
)
async def test_queries_the_app_tells_apart_are_not_served_for_each_other(
    cache: RedisCache, stored: bytes, other: bytes
) -> None:
    app = canonical_app(cache)
    _, _, first = await raw_get(app, "/p", stored)
    _, headers, second = await raw_get(app, "/p", other)
    assert "; hit" not in headers["cache-status"]
    assert first != second  # the app reflected each one as it came


async def test_an_ignored_query_parameter_never_reaches_the_app(cache: RedisCache) -> None:
    # ignore_query_params: the app is handed the query less the ignored parameters, so a
    # reflected tracking parameter cannot be stored and served to those without it.
    app = canonical_app(cache, ignore_query_params=["utm_*"])
    _, attack_headers, attack = await raw_get(app, "/p", b'utm_source="><script>&a=1')
    _, victim_headers, victim = await raw_get(app, "/p", b"a=1")
    assert b"<script>" not in attack and b"utm_source" not in attack
    assert attack_headers["cache-status"].endswith("; stored")
    assert "; hit" in victim_headers["cache-status"] and victim == attack


# -- the same attacks over a real uvicorn, with the README's quick-start settings ----------


@pytest.fixture
def attack_server(redis_server: RedisServer, namespace: str) -> Iterator[tuple[str, int]]:
    """``tests/attack_app.py`` under a real uvicorn on loopback, on the real Redis."""
    with uvicorn_on_loopback(
        "tests.attack_app:app", redis_url=redis_server.url, namespace=namespace, probe="/me"
    ) as base:
        host, port = base.removeprefix("http://").split(":")
        yield host, int(port)


def raw_http(address: tuple[str, int], request: bytes) -> bytes:
    """Send raw request bytes (as a non-browser client can) and return the raw answer."""
    with socket.create_connection(address, timeout=5) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("backend", ["redis"])
def test_uvicorn_raw_markup_in_the_query_is_not_served_to_a_link_follower(
    attack_server: tuple[str, int], backend: str
) -> None:
    host, port = attack_server
    attack = raw_http(
        attack_server,
        b'GET /page?x="><script>alert(1)</script> HTTP/1.1\r\n'
        + f"Host: {host}:{port}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert b"<script>alert(1)</script>" in attack and b"stored" in attack
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=5) as client:
        # What a browser sends for the same link: the markup escaped.
        url = "/page?x=%22%3E%3Cscript%3Ealert(1)%3C/script%3E"
        victim = client.get(url)
        again = client.get(url)
    assert b"<script>" not in victim.content and "; hit" not in victim.headers["cache-status"]
    assert b"<script>" not in again.content and "; hit" in again.headers["cache-status"]


@pytest.mark.parametrize("backend", ["redis"])
@pytest.mark.parametrize("path", ["/me", "/users/me/x.css", "/users/me;.js"])
def test_uvicorn_a_session_page_is_not_served_to_anyone_else(
    attack_server: tuple[str, int], backend: str, path: str
) -> None:
    host, port = attack_server
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=5) as client:
        alice = client.get(path, headers={"cookie": "sid=alice"})
        client.cookies.clear()
        anonymous = client.get(path)
        anonymous_again = client.get(path)
    assert "hello alice" in alice.text and alice.headers["cache-status"].endswith("detail=cookie")
    assert "alice" not in anonymous.text and "alice" not in anonymous_again.text
    assert "; hit" in anonymous_again.headers["cache-status"]


# -- privacy: cookies and credential headers -------------------------------------------------


def cookie_client(cache: RedisCache, origin: Origin, **options: Any) -> httpx.AsyncClient:
    """A client that sends only the cookies a test names (httpx keeps no cookie jar here)."""
    client = client_for(cache, origin, **options)
    client.cookies = httpx.Cookies()
    return client


@pytest.mark.parametrize(
    "origin_headers",
    [[], [("cache-control", "max-age=60")], [("cache-control", "must-revalidate, max-age=60")]],
    ids=["default-ttl", "max-age", "must-revalidate"],
)
async def test_a_cookie_request_page_is_not_shared(
    cache: RedisCache, origin_headers: list[tuple[str, str]]
) -> None:
    # The README's quick start (default_ttl=60): Alice's page, personalised by her session
    # cookie, is neither stored nor answered from the cache (Varnish's builtin passes it).
    origin = Origin(render=lambda r: f"hello {user_of(r)}", headers=origin_headers)
    async with cookie_client(cache, origin) as client:
        alice = await client.get("/me", headers={"cookie": "sid=alice"})
        anonymous = await client.get("/me")
        alice_again = await client.get("/me", headers={"cookie": "sid=alice"})
        anonymous_again = await client.get("/me")
    assert status_of(alice).endswith("detail=cookie") and "hello alice" in alice.text
    assert "alice" not in anonymous.text and status_of(anonymous).endswith("; stored")
    assert "hello alice" in alice_again.text and not is_hit(alice_again)
    assert is_hit(anonymous_again) and "alice" not in anonymous_again.text


@pytest.mark.parametrize("path", ["/users/me/x.css", "/users/me;.js"])
async def test_cache_deception_paths_do_not_leak_a_cookie_page(
    cache: RedisCache, path: str
) -> None:
    # A rule caches "static" paths for an hour; the app routes them to the profile page.
    origin = Origin(render=lambda r: f"profile of {user_of(r)}")
    async with cookie_client(cache, origin, rules={"*.css": 3600, "*.js": 3600}) as client:
        alice = await client.get(path, headers={"cookie": "sid=alice"})
        attacker = await client.get(path)
    assert "profile of alice" in alice.text and not status_of(alice).endswith("; stored")
    assert "alice" not in attacker.text


@pytest.mark.parametrize(
    "cache_control", ["public, max-age=60", "s-maxage=60"], ids=["public", "s-maxage"]
)
async def test_an_explicitly_shared_page_is_shared_with_cookie_requests(
    cache: RedisCache, cache_control: str
) -> None:
    origin = Origin(render=lambda r: "news for all", headers=[("cache-control", cache_control)])
    async with cookie_client(cache, origin) as client:
        alice = await client.get("/news", headers={"cookie": "sid=alice"})
        bob = await client.get("/news", headers={"cookie": "sid=bob"})
        anonymous = await client.get("/news")
    assert status_of(alice).endswith("; stored") and is_hit(bob) and is_hit(anonymous)
    assert origin.calls["/news"] == 1


async def test_a_page_varying_on_cookie_is_kept_per_cookie(cache: RedisCache) -> None:
    origin = Origin(
        render=lambda r: f"hello {user_of(r)}",
        headers=[("cache-control", "max-age=60"), ("vary", "Cookie")],
    )
    async with cookie_client(cache, origin) as client:
        alice = await client.get("/me", headers={"cookie": "sid=alice"})
        bob = await client.get("/me", headers={"cookie": "sid=bob"})
        alice_again = await client.get("/me", headers={"cookie": "sid=alice"})
    assert status_of(alice).endswith("; stored") and "hello bob" in bob.text
    assert is_hit(alice_again) and "hello alice" in alice_again.text


async def test_ignored_cookies_neither_make_a_request_private_nor_reach_a_key(
    cache: RedisCache, redis_client: Any
) -> None:
    origin = Origin(
        render=lambda r: "the same for everyone",
        headers=[("cache-control", "max-age=60"), ("vary", "Cookie")],
    )
    async with cookie_client(cache, origin, ignore_cookies=["_ga*", "consent"]) as client:
        first = await client.get("/doc", headers={"cookie": "_ga=GA1.1; consent=yes"})
        second = await client.get("/doc", headers={"cookie": "_gat=2; consent=no"})
        anonymous = await client.get("/doc")
        session = await client.get("/doc", headers={"cookie": "_ga=GA1.1; sid=alice"})
    # Only analytics and consent cookies: anonymous, one variant for all three.
    assert status_of(first).endswith("; stored") and is_hit(second) and is_hit(anonymous)
    # A session cookie beside them is keyed (Vary: Cookie), the ignored one is not.
    assert not is_hit(session) and status_of(session).endswith("; stored")
    assert origin.calls["/doc"] == 2
    stored = await stored_bytes(redis_client, cache.namespace)
    assert b"GA1.1" not in stored and b"alice" not in stored


async def test_share_cookie_requests_turns_the_rule_off(cache: RedisCache) -> None:
    origin = Origin(render=lambda r: "no cookies matter here")
    async with cookie_client(cache, origin, share_cookie_requests=True) as client:
        first = await client.get("/api", headers={"cookie": "sid=alice"})
        second = await client.get("/api", headers={"cookie": "sid=bob"})
    assert status_of(first).endswith("; stored") and is_hit(second)


async def test_credential_headers_make_a_request_private(cache: RedisCache) -> None:
    origin = Origin(
        render=lambda r: f"keys of {r.headers.get('x-api-key', 'nobody')}",
        headers=[("cache-control", "max-age=60")],
    )
    async with client_for(cache, origin, credential_headers=["X-Api-Key"]) as client:
        alice = await client.get("/keys", headers={"x-api-key": "alice-key"})
        anonymous = await client.get("/keys")
        bob = await client.get("/keys", headers={"x-api-key": "bob-key"})
    assert status_of(alice).endswith("detail=credentials")
    assert "alice" not in anonymous.text and status_of(anonymous).endswith("; stored")
    assert "keys of bob-key" in bob.text and not is_hit(bob)


def test_credential_headers_refuse_authorization_and_cookie() -> None:
    with pytest.raises(ConfigError, match="credential_headers"):
        CacheMiddleware(
            app_for(Origin()),
            cache=RedisCache(redis.asyncio.Redis()),
            credential_headers=["Cookie"],
        )


# -- hit-for-pass comes from the URL, never from one request ----------------------------------


async def test_a_junk_authorization_does_not_turn_coalescing_off(
    cache: RedisCache, redis_client: Any
) -> None:
    gate = asyncio.Event()
    calls = Counter[str]()

    async def respond(request: Request) -> Response:
        calls[request.headers.get("authorization", "anonymous")] += 1
        if "authorization" not in request.headers:
            await gate.wait()
        return Response(b"page", headers={"cache-control": "max-age=60"})

    app = Starlette(routes=[Route("/cold", respond)])
    app.add_middleware(CacheMiddleware, cache=cache, timeout=1.0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{SITE}") as client:
        junk = await client.get("/cold", headers={"authorization": "Bearer junk"})
        base = keys.url_key(
            cache.namespace, cache.generation, cache.hash_for_url(f"http://{SITE}/cold")
        )
        marked = await redis_client.exists(keys.pass_key(base))
        anonymous = [asyncio.ensure_future(client.get("/cold")) for _ in range(10)]
        await asyncio.sleep(0.2)
        gate.set()
        answers = await asyncio.gather(*anonymous)
    assert status_of(junk).endswith("detail=authorization") and marked == 0
    assert all(a.content == b"page" for a in answers)
    assert calls["anonymous"] == 1


# -- error pages have a short default lifetime ------------------------------------------------


async def test_an_error_page_pinned_by_an_unkeyed_header_lives_error_ttl(cache: RedisCache) -> None:
    # An app-side method override turns GET / into a 405; with default_ttl=60 that page
    # would deny / for a minute. Statuses other than 2xx/3xx get error_ttl (10 s) instead.
    async def respond(request: Request) -> Response:
        if request.headers.get("x-http-method-override"):
            return Response(b"method not allowed", status_code=405)
        return Response(b"home")

    app = Starlette(routes=[Route("/", respond)])
    app.add_middleware(CacheMiddleware, cache=cache, default_ttl=60, timeout=1.0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{SITE}") as client:
        await client.get("/", headers={"x-http-method-override": "DELETE"})
        victim = await client.get("/")
    assert victim.status_code == 405 and is_hit(victim)
    ttl = int(status_of(victim).split("ttl=")[1].split(";")[0])
    assert 0 < ttl <= 10
    [info] = await cache.inspect_url(f"http://{SITE}/")
    assert info.fresh_for == 10 and info.ttl_left is not None and info.ttl_left <= 10


@pytest.mark.parametrize(
    ("options", "headers", "expected"),
    [
        ({"default_ttl": 60}, [], 10),
        ({"default_ttl": 60, "error_ttl": 2}, [], 2),
        ({"default_ttl": 60, "error_ttl": None}, [], 60),
        ({"default_ttl": 5}, [], 5),
        ({"default_ttl": 60}, [("cache-control", "max-age=60")], 60),
    ],
    ids=["default", "shorter", "off", "default-ttl-shorter", "stated-lifetime-kept"],
)
async def test_error_ttl_caps_only_the_default_lifetime(
    cache: RedisCache, options: dict[str, Any], headers: list[tuple[str, str]], expected: int
) -> None:
    async def respond(request: Request) -> Response:
        return Response(b"gone", status_code=404, headers=dict(headers))

    app = Starlette(routes=[Route("/x", respond)])
    app.add_middleware(CacheMiddleware, cache=cache, timeout=1.0, **options)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{SITE}") as client:
        await client.get("/x")
        hit = await client.get("/x")
    assert is_hit(hit)
    assert expected - 1 <= int(status_of(hit).split("ttl=")[1].split(";")[0]) <= expected


# -- invalidation by Location can be turned off ------------------------------------------------


@pytest.mark.parametrize("follow", [True, False], ids=["default", "off"])
async def test_an_open_redirect_evicts_a_url_only_while_invalidate_locations_is_on(
    cache: RedisCache, follow: bool
) -> None:
    async def respond(request: Request) -> Response:
        if request.method == "POST":  # an open redirect: Location comes from the client
            return Response(status_code=303, headers={"location": request.query_params["next"]})
        return Response(b"victim page", headers={"cache-control": "max-age=60"})

    app = Starlette(routes=[Route("/{p:path}", respond, methods=["GET", "POST"])])
    app.add_middleware(CacheMiddleware, cache=cache, timeout=1.0, invalidate_locations=follow)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{SITE}") as client:
        await client.get("/victim")
        await client.post("/login", params={"next": "/victim"})
        after = await client.get("/victim")
    assert is_hit(after) is not follow


# -- vary values and everything an entry stores are bounded --------------------------------------


async def test_huge_vary_values_are_stored_bounded(cache: RedisCache, redis_client: Any) -> None:
    # Three 60 KB User-Agents on a 500-byte page varying on it: each entry keeps a bounded
    # form of the value, not 60 KB for its whole TTL.
    origin = Origin(
        render=lambda r: "x" * 500,
        headers=[("cache-control", "max-age=60"), ("vary", "User-Agent")],
    )
    async with client_for(cache, origin) as client:
        for agent in "abc":
            answer = await client.get("/page", headers={"user-agent": agent * 60_000})
            assert status_of(answer).endswith("; stored")
        again = await client.get("/page", headers={"user-agent": "b" * 60_000})
    assert is_hit(again)
    assert len(await stored_bytes(redis_client, cache.namespace)) < 3 * 2_000


async def test_tags_count_towards_max_body_size(cache: RedisCache) -> None:
    tags = " ".join(f"tag-{i:03d}" for i in range(60))  # 420 bytes of tags, 600 of body
    origin = Origin(
        render=lambda r: "x" * 600,
        headers=[("cache-control", "max-age=60"), ("surrogate-key", tags)],
    )
    async with client_for(cache, origin, max_body_size=1000) as client:
        answer = await client.get("/tagged")
    assert status_of(answer).endswith("detail=too-large")


# -- privacy: two users --------------------------------------------------------------------


def user_of(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    return auth.removeprefix("Bearer ") or request.cookies.get("sid", "anonymous")


async def test_set_cookie_response_is_not_replayed_to_another_user(cache: RedisCache) -> None:
    origin = Origin(render=lambda r: f"hello {user_of(r)}")

    async def respond(request: Request) -> Response:
        response = await origin.respond(request)
        # Even claiming to be public, a response that sets a cookie is never stored.
        response.headers["cache-control"] = "public, max-age=60"
        response.set_cookie("session", f"secret-of-{user_of(request)}")
        return response

    app = Starlette(routes=[Route("/{path:path}", respond)])
    app.add_middleware(CacheMiddleware, cache=cache)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{SITE}") as client:
        alice = await client.get("/me", headers={"cookie": "sid=alice"})
        bob = await client.get("/me", headers={"cookie": "sid=bob"})
    assert status_of(alice).endswith("detail=set-cookie")
    assert "secret-of-alice" in alice.headers["set-cookie"]
    assert "secret-of-bob" in bob.headers["set-cookie"] and "alice" not in bob.text
    assert await cache.inspect_url(f"http://{SITE}/me") == []


async def test_private_response_is_not_served_to_another_user(cache: RedisCache) -> None:
    origin = Origin(
        render=lambda r: f"hello {user_of(r)}",
        headers=[("cache-control", "private, max-age=60")],
    )
    async with client_for(cache, origin) as client:
        alice = await client.get("/me", headers={"cookie": "sid=alice"})
        bob = await client.get("/me", headers={"cookie": "sid=bob"})
    assert status_of(alice).endswith("detail=private")
    assert "hello bob" in bob.text and "alice" not in bob.text
    assert origin.calls["/me"] == 2


async def test_authorized_response_is_not_served_to_another_user(
    cache: RedisCache, framework: str
) -> None:
    # The app personalises by Authorization and says max-age, but not public / Vary.
    spec = Spec(headers=[("cache-control", "max-age=60")], echo_headers=("authorization",))
    origin = HelperOrigin(specs={"/me": spec})
    async with make_client(cache, origin, framework) as client:
        alice = await client.get("/me", headers={"authorization": "Bearer alice"})
        bob = await client.get("/me", headers={"authorization": "Bearer bob"})
        assert await cache.inspect_url("http://testserver/me") == []
        anonymous = await client.get("/me")
        alice_again = await client.get("/me", headers={"authorization": "Bearer alice"})
        anonymous_again = await client.get("/me")
    refused = b"redis-cache; fwd=uri-miss; fwd-status=200; detail=authorization"
    for response, who in ((alice, b"alice"), (bob, b"bob")):
        assert response.status_code == 200
        assert response.content.endswith(b"authorization=Bearer " + who)
        assert response.headers.raw == [
            (b"content-length", str(len(response.content)).encode()),
            (b"cache-control", b"max-age=60"),
            (b"cache-status", refused),
        ]
    # Nothing of Alice's or Bob's was kept for an anonymous request either: its page is stored.
    assert anonymous.content == b"/me? call=3 authorization=None"
    assert anonymous.headers["cache-status"] == "redis-cache; fwd=uri-miss; fwd-status=200; stored"
    # The anonymous entry is never served to a request that carries credentials...
    assert alice_again.content == b"/me? call=4 authorization=Bearer alice"
    assert not is_hit(alice_again) and status_of(alice_again).endswith("detail=authorization")
    # ...and Alice's answer, not stored for her credentials' sake, leaves it to everyone else.
    assert "; hit; " in status_of(anonymous_again)
    assert anonymous_again.content == anonymous.content
    assert origin.calls["/me"] == 4


@pytest.mark.parametrize(
    "cache_control",
    [
        pytest.param("public, max-age=60", id="public"),
        pytest.param("max-age=5, s-maxage=60", id="s-maxage"),
        pytest.param("max-age=60, must-revalidate", id="must-revalidate"),
    ],
)
async def test_authorized_response_marked_public_is_shared(
    cache: RedisCache, framework: str, cache_control: str
) -> None:
    # RFC 9111 3.5: public, s-maxage or must-revalidate is the app's permission to share.
    spec = Spec(headers=[("cache-control", cache_control)], echo_headers=("authorization",))
    origin = HelperOrigin(specs={"/acct": spec})
    async with make_client(cache, origin, framework) as client:
        alice = await client.get("/acct", headers={"authorization": "Bearer alice"})
        bob = await client.get("/acct", headers={"authorization": "Bearer bob"})
    assert alice.status_code == bob.status_code == 200
    # Bob gets the entry Alice's request stored.
    assert alice.content == bob.content == b"/acct? call=1 authorization=Bearer alice"
    stored = [(b"content-length", b"40"), (b"cache-control", cache_control.encode())]
    assert alice.headers.raw == [
        *stored,
        (b"cache-status", b"redis-cache; fwd=uri-miss; fwd-status=200; stored"),
    ]
    assert bob.headers.raw in hit_raw(*stored, ttl=60)
    assert origin.calls["/acct"] == 1


async def test_vary_cookie_keeps_users_apart_and_keeps_cookies_out_of_redis(
    cache: RedisCache, redis_client: Any
) -> None:
    origin = Origin(render=lambda r: f"hello {user_of(r)}", headers=[("vary", "Cookie")])
    alice_cookie = "sid=alice; token=alice-cookie-secret"
    async with client_for(cache, origin) as client:
        alice = await client.get("/me", headers={"cookie": alice_cookie})
        bob = await client.get("/me", headers={"cookie": "sid=bob"})
        alice_again = await client.get("/me", headers={"cookie": alice_cookie})
    assert status_of(alice).endswith("; stored") and "hello bob" in bob.text
    assert is_hit(alice_again) and alice_again.text == alice.text
    # The variant's request values are kept for inspection, with credentials redacted.
    for key in await namespace_keys(redis_client, cache.namespace):
        if await redis_client.type(key) == b"hash":
            values = (await redis_client.hgetall(key)).values()
            assert not any(b"alice-cookie-secret" in v for v in values)


async def test_two_apps_sharing_one_redis_are_isolated_by_namespace(
    redis_client: Any, namespace: str
) -> None:
    first = RedisCache(redis_client, namespace=f"{namespace}-a")
    second = RedisCache(redis_client, namespace=f"{namespace}-b")
    origin_a = Origin(render=lambda r: "app A")
    origin_b = Origin(render=lambda r: "app B")
    async with client_for(first, origin_a) as a, client_for(second, origin_b) as b:
        a1 = await a.get("/same?x=1")
        b1 = await b.get("/same?x=1")
        assert "app A" in a1.text and "app B" in b1.text and not is_hit(b1)
        # Purging or clearing one namespace leaves the other's entries alone.
        assert await first.purge_url(f"http://{SITE}/same?x=1") == 1
        await first.clear()
        b2 = await b.get("/same?x=1")
        a2 = await a.get("/same?x=1")
    assert is_hit(b2) and "app B" in b2.text
    assert not is_hit(a2) and "app A" in a2.text
    keys_a = await namespace_keys(redis_client, first.namespace)
    keys_b = await namespace_keys(redis_client, second.namespace)
    assert keys_a and keys_b and not set(keys_a) & set(keys_b)


@pytest.mark.parametrize("bad", ["a:b", "a{b}", "", "x" * 65, "a*", "a b"])
def test_namespace_cannot_reach_into_another(bad: str) -> None:
    # No ':' (our separator), no hash-tag braces, no glob characters: one namespace's keys
    # are never a prefix-match of another's.
    with pytest.raises(ConfigError, match="namespace"):
        RedisCache(redis.asyncio.Redis(), namespace=bad)


# -- the purge endpoint --------------------------------------------------------------------

TOKEN = "s3cret-purge-token-0123456789"


async def test_purge_endpoint_is_disabled_without_a_token(cache: RedisCache) -> None:
    origin = Origin()
    async with client_for(cache, origin) as client:
        await client.get("/page")
        purge = await client.request("PURGE", "/page", headers={"authorization": f"Bearer {TOKEN}"})
        post = await client.post(
            "/_cache/purge", json={"all": True}, headers={"authorization": f"Bearer {TOKEN}"}
        )
        after = await client.get("/page")
    # Both reached the app; the cache did not answer them, and no endpoint purged anything.
    assert purge.text.startswith("PURGE /page") and post.text.startswith("POST /_cache/purge")
    assert origin.calls["/_cache/purge"] == 1
    # A PURGE the app answered 2xx is a method of unknown safety that succeeded: like any
    # such method it invalidated its own URL (RFC 9111 4.4), and only that one.
    assert not is_hit(after) and cache.stats.invalidated == 1


#: Every way of not presenting the token: missing, wrong scheme, empty, wrong, a prefix, too
#: long, same length, case-changed, raw.
BAD_AUTH: list[dict[str, str]] = [
    {},
    {"authorization": ""},
    {"authorization": "Bearer"},
    {"authorization": "Bearer "},
    {"authorization": "Bearer x"},
    {"authorization": f"Bearer {TOKEN[:-1]}"},
    {"authorization": f"Bearer {TOKEN}x"},
    {"authorization": f"Bearer {TOKEN * 8}"},
    {"authorization": f"Bearer {'x' * len(TOKEN)}"},
    {"authorization": f"Bearer {TOKEN.upper()}"},
    {"authorization": f"Basic {TOKEN}"},
    {"authorization": TOKEN},
]


async def test_purge_rejections_are_byte_identical(cache: RedisCache) -> None:
    origin = Origin()
    answers: set[tuple[int, tuple[tuple[bytes, bytes], ...], bytes]] = set()
    async with client_for(cache, origin, purge_token=TOKEN) as client:
        await client.get("/page")
        for headers in BAD_AUTH:
            for method, url in (("POST", "/_cache/purge"), ("PURGE", "/page")):
                response = await client.request(method, url, json={"all": True}, headers=headers)
                answers.add((response.status_code, tuple(response.headers.raw), response.content))
        survived = await client.get("/page")
        good = await client.request("PURGE", "/page", headers={"authorization": f"Bearer {TOKEN}"})
    # One answer for every failure: no status, header or message tells a guess apart.
    assert len(answers) == 1
    status, raw, body = answers.pop()
    assert status == 401 and body == b"{}" and (b"www-authenticate", b"Bearer") in raw
    assert is_hit(survived)
    assert good.status_code == 200 and good.json() == {"purged": 1}
    assert origin.calls == Counter({"/page": 1})


async def test_purge_token_compared_in_constant_time_on_every_attempt(
    cache: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not a timed assertion: every attempt, whatever it presents, goes through one
    # hmac.compare_digest against the whole token (whose running time depends on the token's
    # length, not on how much of a guess is right), and nothing else decides.
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    async with client_for(cache, Origin(), purge_token=TOKEN) as client:
        for headers in [*BAD_AUTH, {"authorization": f"Bearer {TOKEN}"}]:
            await client.post("/_cache/purge", json={}, headers=headers)
    assert len(calls) == len(BAD_AUTH) + 1
    assert all(isinstance(a, bytes) and b == TOKEN.encode() for a, b in calls)


async def test_bypass_token_compared_in_constant_time(
    cache: RedisCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    origin = Origin()
    options = {"bypass_header": "X-Cache-Bypass", "bypass_token": TOKEN}
    async with client_for(cache, origin, **options) as client:
        await client.get("/page")
        wrong = await client.get("/page", headers={"x-cache-bypass": TOKEN[:-1]})
        right = await client.get("/page", headers={"x-cache-bypass": TOKEN})
    assert is_hit(wrong) and "fwd=bypass" in status_of(right)
    assert calls == [(TOKEN[:-1].encode(), TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


# -- bounds --------------------------------------------------------------------------------


async def test_key_length_is_bounded_whatever_the_url(cache: RedisCache, redis_client: Any) -> None:
    origin = Origin(render=lambda r: "long", headers=[("vary", "accept-language")])
    path = "/" + "p" * 16_000
    query = "&".join(f"k{i}={'v' * 100}" for i in range(400))  # ~42 KiB (httpx's limit: 64)
    async with client_for(cache, origin) as client:
        first = await client.get(
            f"{path}?{query}", headers={"host": "h" * 2000, "accept-language": "l" * 8000}
        )
        again = await client.get(
            f"{path}?{query}", headers={"host": "h" * 2000, "accept-language": "l" * 8000}
        )
    assert status_of(first).endswith("; stored") and is_hit(again)
    found = await namespace_keys(redis_client, cache.namespace)
    assert found
    # Namespace, generation, a 32-hex hash in braces and a short suffix: < 120 bytes.
    assert max(len(k) for k in found) < len(cache.namespace) + 100
    # No index member holds the 2000-byte host: a host that long is not indexed at all.
    for key in found:
        if await redis_client.type(key) == b"zset":
            members = await redis_client.zrange(key, 0, -1)
            assert all(b"h" * 300 not in m for m in members)
    hosts = await redis_client.zrange(keys.hosts_key(cache.namespace, cache.generation), 0, -1)
    assert hosts == []


async def test_path_index_holds_a_bounded_prefix_of_a_long_path(
    cache: RedisCache, redis_client: Any
) -> None:
    origin = Origin(render=lambda r: "long")
    path = "/long/" + "p" * 16_000
    async with client_for(cache, origin) as client:
        first = await client.get(path)
    assert status_of(first).endswith("; stored")
    lex, _ = keys.prefix_keys(cache.namespace, cache.generation, SITE.encode())
    members = await redis_client.zrange(lex, 0, -1)
    # At most 1 KiB of the path, NUL and the URL hash; and the prefix purge still finds it.
    assert len(members) == 1 and len(members[0]) == 1024 + 1 + 32
    assert await cache.purge_prefix("/long") == 1


async def test_body_over_max_body_size_is_not_stored(cache: RedisCache) -> None:
    # max_body_size bounds the entry, headers included: 1000 bytes and a content-length
    # header fit in 1024, 1025 bytes of body do not.
    sizes = {"/at-limit": 1000, "/over": 1025}

    async def respond(request: Request) -> Response:
        size = sizes[request.url.path.removesuffix("/streamed")]
        if request.url.path.endswith("/streamed"):

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(size // 100):
                    yield b"x" * 100
                yield b"x" * (size % 100)

            return StreamingResponse(chunks())
        return Response(b"x" * size)

    app = Starlette(routes=[Route("/{path:path}", respond)])
    app.add_middleware(CacheMiddleware, cache=cache, default_ttl=60, max_body_size=1024)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{SITE}") as client:
        for path in ("/at-limit", "/over", "/at-limit/streamed", "/over/streamed"):
            response = await client.get(path)
            assert len(response.content) == sizes[path.removesuffix("/streamed")]
            stored = await cache.inspect_url(f"http://{SITE}{path}")
            if path.startswith("/over"):
                assert stored == [], path
                # Sent whole, its Cache-Status says why; streamed, it made no claim.
                assert ("detail=too-large" in status_of(response)) == (path == "/over")
                assert "stored" not in status_of(response)
            else:
                assert len(stored) == 1, path


async def test_response_headers_count_towards_max_body_size(cache: RedisCache) -> None:
    # An entry is bounded as a whole: ~64 KiB of headers on a tiny body is too large for a
    # 16 KiB max_body_size; the same headers fit under a larger one and replay whole.
    many = [(f"x-h{i}", f"{i}-" + "v" * 200) for i in range(300)]
    origin = Origin(render=lambda r: "small", headers=many)
    async with client_for(cache, origin, max_body_size=16 * 1024) as client:
        first = await client.get("/headers")
        second = await client.get("/headers")
    assert "detail=too-large" in status_of(first) and not is_hit(second)
    assert [(k, v) for k, v in second.headers.raw if k.startswith(b"x-h")] == [
        (k.encode(), v.encode()) for k, v in many
    ]
    async with client_for(cache, origin, max_body_size=128 * 1024) as client:
        first = await client.get("/headers-fit")
        second = await client.get("/headers-fit")
    assert status_of(first).endswith("; stored") and is_hit(second)
    replayed = [(k, v) for k, v in second.headers.raw if k.startswith(b"x-h")]
    assert replayed == [(k.encode(), v.encode()) for k, v in many]


async def test_headers_and_body_together_over_max_body_size_are_not_stored(
    cache: RedisCache,
) -> None:
    # A body that fits alone, but not with its headers.
    origin = Origin(render=lambda r: "b" * 900, headers=[("x-pad", "p" * 200)])
    async with client_for(cache, origin, max_body_size=1024) as client:
        first = await client.get("/tight")
        second = await client.get("/tight")
    assert "detail=too-large" in status_of(first) and not is_hit(second)
    assert second.content.startswith(b"b" * 900) and origin.calls["/tight"] == 2


def in_use(client: Any) -> int:
    """The connections the client's pool has handed out and not had back."""
    return len(client.connection_pool._in_use_connections)


@pytest.mark.parametrize("backend", ["fakeredis", "redis"])
@pytest.mark.parametrize("path", ["hit", "miss"])
async def test_slow_client_does_not_pin_a_redis_connection(
    cache: RedisCache, redis_client: Any, backend: str, path: str
) -> None:
    origin = Origin(render=lambda r: "x" * 5000)
    app = app_for(origin)
    app.add_middleware(CacheMiddleware, cache=cache, default_ttl=60)
    scope = http_scope("/slow", host=SITE)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def fast_send(message: Message) -> None:
        pass

    if path == "hit":
        await app(dict(scope), receive, fast_send)  # store it first
    blocked = asyncio.Event()
    release = asyncio.Event()
    sent: list[Message] = []

    async def slow_send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            blocked.set()
            await release.wait()  # a client that does not read

    task = asyncio.create_task(app(dict(scope), receive, slow_send))
    await asyncio.wait_for(blocked.wait(), 5)
    # The client holds the response; no Redis connection is held with it: none at all, or
    # only the lane's, which every request shares (``multiplex``) and is held while idle.
    # A miss's store, sent as the response went out, ends while the client still holds it.
    lane = cache._state.lane
    held = 0 if lane is None else 1
    for _ in range(100):
        if in_use(redis_client) == held:
            break
        await asyncio.sleep(0.01)
    assert in_use(redis_client) == held
    if lane is None:
        # ...though the pool did serve this request's lookup (and, on a miss, the fill
        # lock), and the count is live: a command in flight shows up in it.
        assert redis_client.connection_pool._available_connections
    probe = asyncio.create_task(redis_client.blpop([f"{cache.namespace}:probe"], timeout=0.1))
    await asyncio.sleep(0.03)
    assert in_use(redis_client) == held + 1
    await probe
    # Another request's Redis calls go through meanwhile: the slow client holds nothing.
    other: list[Message] = []

    async def other_send(message: Message) -> None:
        other.append(message)

    await asyncio.wait_for(app(http_scope("/other", host=SITE), receive, other_send), 5)
    assert "stored" in dict(other[0]["headers"])[b"cache-status"].decode()
    release.set()
    await asyncio.wait_for(task, 5)
    status = dict(sent[0]["headers"])[b"cache-status"].decode()
    assert ("; hit" in status) == (path == "hit")
    assert origin.calls["/slow"] == 1
    assert await cache.inspect_url(f"http://{SITE}/slow")  # the miss stored after sending
    assert in_use(redis_client) == held


# -- connection security: TLS and ACL ------------------------------------------------------


@dataclass
class TLSServer:
    port: int
    ca: Path
    process: subprocess.Popen[bytes]

    def url(self, auth: str = "", query: str = "") -> str:
        query = query or f"ssl_ca_certs={self.ca}"
        return f"rediss://{auth}127.0.0.1:{self.port}/0?{query}"

    def admin(self) -> redis.Redis:
        return redis.Redis(port=self.port, ssl=True, ssl_ca_certs=str(self.ca), socket_timeout=2)


def _openssl(workdir: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=workdir, check=True, capture_output=True, timeout=30)


def _make_certificates(workdir: Path) -> None:
    """A CA and a server certificate for 127.0.0.1 signed by it, made for this session."""
    new_key = ["-newkey", "rsa:2048", "-nodes", "-keyout"]
    _openssl(workdir, "req", "-x509", *new_key, "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=rcm-test-ca")  # fmt: skip
    _openssl(workdir, "req", *new_key, "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1")  # fmt: skip
    (workdir / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    sign = [
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.cnf",
    ]
    _openssl(workdir, "x509", "-req", "-in", "server.csr", *sign, "-out", "server.crt")


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TLSServer]:
    """A redis-server speaking only TLS on a free port, with certificates made here."""
    binary, openssl = shutil.which("redis-server"), shutil.which("openssl")
    if binary is None or openssl is None:
        unavailable("the TLS tests need redis-server and openssl on PATH")
    workdir = Path(tempfile.mkdtemp(prefix="rcm-tls-"))
    try:
        _make_certificates(workdir)
        port = free_port()
        log = workdir / "redis.log"
        process = subprocess.Popen(
            [
                binary,
                *f"--port 0 --tls-port {port} --bind 127.0.0.1 --appendonly no".split(),
                *["--tls-cert-file", "server.crt", "--tls-key-file", "server.key"],
                *["--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no"],
                *["--save", "", "--dir", str(workdir), "--logfile", str(log)],
            ],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = TLSServer(port=port, ca=workdir / "ca.crt", process=process)
        admin = server.admin()
        for _ in range(100):
            try:
                admin.ping()
                break
            except (redis.RedisError, OSError):
                if process.poll() is not None:
                    output = log.read_text(errors="replace") if log.exists() else ""
                    unavailable(f"redis-server does not support TLS here: {output[-300:]}")
                subprocess.run(["sleep", "0.05"], check=True)
        else:
            process.kill()
            pytest.fail("the TLS redis-server did not answer within 5 s")
        admin.close()
        yield server
        process.terminate()
        process.wait(timeout=5)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def round_trip(cache: RedisCache) -> tuple[httpx.Response, httpx.Response, Origin]:
    origin = Origin()
    async with client_for(cache, origin, timeout=1.0) as client:
        first = await client.get("/page")
        second = await client.get("/page")
    return first, second, origin


async def test_rediss_url_round_trip_over_tls(tls_server: TLSServer) -> None:
    namespace = f"tls-{uuid.uuid4().hex[:8]}"
    async with RedisCache.from_url(tls_server.url(), namespace=namespace) as cache:
        first, second, origin = await round_trip(cache)
        assert status_of(first).endswith("; stored") and is_hit(second)
        assert origin.calls["/page"] == 1
        assert len(await cache.inspect_url(f"http://{SITE}/page")) == 1
        client: Any = cache.client
        assert issubclass(client.connection_pool.connection_class, SSLConnection)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("untrusted", id="server-cert-not-trusted"),
        pytest.param("plain", id="plain-redis-url-on-tls-port"),
    ],
)
async def test_tls_misconfiguration_fails_open(tls_server: TLSServer, url: str) -> None:
    bad = (
        f"rediss://127.0.0.1:{tls_server.port}/0"  # no ssl_ca_certs: the system CAs only
        if url == "untrusted"
        else f"redis://127.0.0.1:{tls_server.port}/0"
    )
    async with RedisCache.from_url(bad, namespace="tls-bad") as cache:
        first, second, origin = await round_trip(cache)
        with pytest.raises((redis.RedisError, ssl.SSLError, OSError)):
            await cache.client.ping()
    assert first.status_code == second.status_code == 200
    assert "detail=redis-error" in status_of(first) and not is_hit(second)
    assert origin.calls["/page"] == 2


ACL_USER, ACL_PASSWORD = "app", "p@ss:w/rd#1"
ACL_PASSWORD_IN_URL = "p%40ss%3Aw%2Frd%231"  # percent-encoded, as URLs need


def add_acl_user(admin: redis.Redis, namespace: str) -> None:
    """An ACL user that may only touch keys of one namespace, and no admin commands."""
    rules = ["reset", "on", f">{ACL_PASSWORD}", f"~{namespace}:*", "+@all", "-@dangerous"]
    admin.execute_command("ACL", "SETUSER", ACL_USER, *rules)  # type: ignore[no-untyped-call]


async def test_acl_user_and_password_in_the_url(own_redis_server: RedisServer) -> None:
    port = own_redis_server.port
    assert port is not None
    admin = redis.Redis(port=port)
    add_acl_user(admin, "acl-ns")
    admin.close()
    url = f"redis://{ACL_USER}:{ACL_PASSWORD_IN_URL}@127.0.0.1:{port}/0"
    async with RedisCache.from_url(url, namespace="acl-ns") as cache:
        first, second, _ = await round_trip(cache)
        assert status_of(first).endswith("; stored") and is_hit(second)
        assert await cache.purge_url(f"http://{SITE}/page") == 1
        await cache.clear()
        assert cache.stats.redis_error == 0
        assert await cache.client.acl_whoami() in (ACL_USER, ACL_USER.encode())


async def test_acl_user_cannot_use_another_namespace_and_fails_open(
    own_redis_server: RedisServer,
) -> None:
    port = own_redis_server.port
    assert port is not None
    admin = redis.Redis(port=port)
    add_acl_user(admin, "acl-ns")
    admin.close()
    url = f"redis://{ACL_USER}:{ACL_PASSWORD_IN_URL}@127.0.0.1:{port}/0"
    async with RedisCache.from_url(url, namespace="someone-else") as cache:
        first, second, origin = await round_trip(cache)
        with pytest.raises(redis.exceptions.NoPermissionError):
            await cache.purge_url(f"http://{SITE}/page")
        assert cache.stats.redis_error > 0
    # Every command was refused (NOPERM): the app answered both, nothing was stored, and the
    # refusal reads as a Redis error, not as an empty cache.
    assert first.status_code == second.status_code == 200
    assert not is_hit(second) and origin.calls["/page"] == 2
    assert "detail=redis-error" in status_of(first)
    assert "detail=redis-error" in status_of(second)


async def test_acl_wrong_password_fails_open(own_redis_server: RedisServer) -> None:
    port = own_redis_server.port
    assert port is not None
    admin = redis.Redis(port=port)
    add_acl_user(admin, "acl-ns")
    admin.close()
    url = f"redis://{ACL_USER}:wrong-password@127.0.0.1:{port}/0"
    async with RedisCache.from_url(url, namespace="acl-ns") as cache:
        first, second, origin = await round_trip(cache)
        with pytest.raises(redis.exceptions.AuthenticationError):
            await cache.client.ping()
    assert first.status_code == second.status_code == 200
    assert "detail=redis-error" in status_of(first) and not is_hit(second)
    assert origin.calls["/page"] == 2


async def test_rediss_with_acl_user(tls_server: TLSServer) -> None:
    namespace = f"tls-acl-{uuid.uuid4().hex[:8]}"
    admin = tls_server.admin()
    add_acl_user(admin, namespace)
    admin.close()
    url = tls_server.url(auth=f"{ACL_USER}:{ACL_PASSWORD_IN_URL}@")
    async with RedisCache.from_url(url, namespace=namespace) as cache:
        first, second, _ = await round_trip(cache)
        assert await cache.client.acl_whoami() in (ACL_USER, ACL_USER.encode())
    assert status_of(first).endswith("; stored") and is_hit(second)


@pytest.mark.parametrize("private", ["authorization", "cookie"])
async def test_a_stale_entry_not_shared_with_a_private_request_never_stands_in_for_it(
    cache: RedisCache, private: str
) -> None:
    # The anonymous page may stand in for an error (stale-if-error) or be revalidated for
    # anonymous requests; for Alice's request (credentials, or a cookie) it is not her page:
    # when the app fails her, she gets the failure, not everyone's page as if it were hers.
    failing = False

    def render(request: Request) -> str:
        if failing:
            raise RuntimeError("the app is down")
        return f"hello {user_of(request)}"

    origin = Origin(render=render, headers=[("cache-control", "max-age=1, stale-if-error=60")])
    alice = (
        {"authorization": "Bearer alice"} if private == "authorization" else {"cookie": "sid=alice"}
    )
    async with client_for(cache, origin) as client:
        stored = await client.get("/me")
        await asyncio.sleep(1.1)
        failing = True
        anonymous = await client.get("/me")
        with pytest.raises(RuntimeError):
            await client.get("/me", headers=alice)
    assert status_of(stored).endswith("; stored") and stored.text.startswith("hello anonymous")
    # The stand-in rule itself works: an anonymous request gets the stale page.
    assert "detail=stale-if-error" in status_of(anonymous) and anonymous.text == stored.text
    assert origin.calls["/me"] == 3
