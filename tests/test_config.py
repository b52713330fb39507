"""Option checks: every bad value fails at construction with a ``ConfigError`` naming it."""

from __future__ import annotations

import ast
import inspect
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette

from redis_cache_middleware import (
    NEVER,
    CacheConfig,
    CacheError,
    CacheMiddleware,
    ConfigError,
    RedisCache,
)
from redis_cache_middleware._types import Receive, Scope, Send
from redis_cache_middleware.config import MAX_TAG_LENGTH


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """An app the middleware never calls in these tests."""
    raise AssertionError("not called")  # pragma: no cover


@pytest.fixture
def cache() -> RedisCache:
    return RedisCache(fakeredis.FakeAsyncRedis(), namespace="test")


def names_option(option: str) -> str:
    """Return the pattern of a message that starts with the option's name."""
    return rf"^{re.escape(option)}\b"


# -- CacheMiddleware options --------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        pytest.param("default_ttl", -1, id="default_ttl-negative"),
        pytest.param("default_ttl", -0.5, id="default_ttl-negative-float"),
        pytest.param("default_ttl", math.nan, id="default_ttl-nan"),
        pytest.param("default_ttl", math.inf, id="default_ttl-inf"),
        pytest.param("default_ttl", "60", id="default_ttl-str"),
        pytest.param("default_ttl", True, id="default_ttl-bool"),
        pytest.param("rules", {"": 10}, id="rules-empty-pattern"),
        pytest.param("rules", {123: 10}, id="rules-int-pattern"),
        pytest.param("rules", {re.compile(b"/api"): 10}, id="rules-bytes-regex"),
        pytest.param("rules", {"/api/*": -1}, id="rules-negative-ttl"),
        pytest.param("rules", {"/api/*": "10"}, id="rules-str-ttl"),
        pytest.param("rules", {"/api/*": True}, id="rules-bool-ttl"),
        pytest.param("rules", {"/api/*": math.nan}, id="rules-nan-ttl"),
        pytest.param("rules", ["/api/*"], id="rules-not-a-mapping"),
        pytest.param("rules", "/api/*", id="rules-str"),
        pytest.param("exclude", "/health", id="exclude-bare-string"),
        pytest.param("exclude", re.compile("/health"), id="exclude-bare-regex"),
        pytest.param("exclude", None, id="exclude-none"),
        pytest.param("exclude", [""], id="exclude-empty-pattern"),
        pytest.param("exclude", [42], id="exclude-int-pattern"),
        pytest.param("vary_on", "accept", id="vary_on-bare-string"),
        pytest.param("vary_on", b"accept", id="vary_on-bytes"),
        pytest.param("vary_on", ["Accept Language"], id="vary_on-space"),
        pytest.param("vary_on", ["accept:"], id="vary_on-colon"),
        pytest.param("vary_on", [""], id="vary_on-empty"),
        pytest.param("vary_on", [b"accept"], id="vary_on-bytes-item"),
        pytest.param("vary_on", {"accept": 1}, id="vary_on-mapping"),
        pytest.param("ignore_query_params", "utm_*", id="ignore_query_params-bare-string"),
        pytest.param("ignore_query_params", [""], id="ignore_query_params-empty"),
        pytest.param("ignore_query_params", [1], id="ignore_query_params-int"),
        pytest.param("host_aliases", "localhost=127.0.0.1", id="host_aliases-str"),
        pytest.param("host_aliases", {"localhost": "http://127.0.0.1"}, id="host_aliases-url"),
        pytest.param("host_aliases", {"a": "b", "b": "c"}, id="host_aliases-chain"),
        pytest.param("max_body_size", -1, id="max_body_size-negative"),
        pytest.param("max_body_size", 1.5, id="max_body_size-float"),
        pytest.param("max_body_size", "1000", id="max_body_size-str"),
        pytest.param("max_body_size", True, id="max_body_size-bool"),
        pytest.param("cacheable_statuses", {200, 206}, id="cacheable_statuses-206"),
        pytest.param("cacheable_statuses", {200, 304}, id="cacheable_statuses-304"),
        pytest.param("cacheable_statuses", {100, 200}, id="cacheable_statuses-100"),
        pytest.param("cacheable_statuses", {600}, id="cacheable_statuses-600"),
        pytest.param("cacheable_statuses", {"200"}, id="cacheable_statuses-str-item"),
        pytest.param("cacheable_statuses", {True}, id="cacheable_statuses-bool-item"),
        pytest.param("cacheable_statuses", 200, id="cacheable_statuses-int"),
        pytest.param("cacheable_statuses", "200", id="cacheable_statuses-str"),
        pytest.param("cache_set_cookie", 1, id="cache_set_cookie-int"),
        pytest.param("cache_set_cookie", "yes", id="cache_set_cookie-str"),
        pytest.param("honour_request_cache_control", None, id="honour-none"),
        pytest.param("bypass_header", "X Bypass", id="bypass_header-space"),
        pytest.param("bypass_header", "", id="bypass_header-empty"),
        pytest.param("bypass_header", b"x-bypass", id="bypass_header-bytes"),
        pytest.param("cache_name", "redis cache", id="cache_name-space"),
        pytest.param("cache_name", "cache;hit", id="cache_name-semicolon"),
        pytest.param("cache_name", "cache,x", id="cache_name-comma"),
        pytest.param("cache_name", "", id="cache_name-empty"),
        pytest.param("cache_name", "1cache", id="cache_name-leading-digit"),
        pytest.param("cache_name", None, id="cache_name-none"),
        pytest.param("timeout", 0, id="timeout-zero"),
        pytest.param("timeout", 0.0, id="timeout-zero-float"),
        pytest.param("timeout", -1, id="timeout-negative"),
        pytest.param("timeout", math.nan, id="timeout-nan"),
        pytest.param("timeout", None, id="timeout-none"),
        pytest.param("timeout", True, id="timeout-bool"),
        pytest.param("timeout", "0.1", id="timeout-str"),
        pytest.param("tag_rules", ["/a"], id="tag_rules-not-a-mapping"),
        pytest.param("tag_rules", {"/a": "tag"}, id="tag_rules-bare-string"),
        pytest.param("tag_rules", {"/a": [""]}, id="tag_rules-empty-tag"),
        pytest.param("tag_rules", {"": ["t"]}, id="tag_rules-empty-pattern"),
        pytest.param("keep_tag_header", "no", id="keep_tag_header-str"),
        pytest.param("invalidate_on_unsafe", 0, id="invalidate_on_unsafe-int"),
        pytest.param("invalidate_locations", "yes", id="invalidate_locations-str"),
        pytest.param("share_cookie_requests", 1, id="share_cookie_requests-int"),
        pytest.param("ignore_cookies", "_ga", id="ignore_cookies-bare-string"),
        pytest.param("ignore_cookies", ["a=b"], id="ignore_cookies-not-a-name"),
        pytest.param("ignore_cookies", [""], id="ignore_cookies-empty"),
        pytest.param("credential_headers", "X-Api-Key", id="credential_headers-bare-string"),
        pytest.param("credential_headers", ["X Api"], id="credential_headers-not-a-name"),
        pytest.param(
            "credential_headers", ["Authorization"], id="credential_headers-authorization"
        ),
        pytest.param("error_ttl", -1, id="error_ttl-negative"),
        pytest.param("error_ttl", "10", id="error_ttl-str"),
        pytest.param("targeted_cache_control", "CDN-Cache-Control", id="targeted-bare-string"),
        pytest.param("targeted_cache_control", {"CDN-Cache-Control"}, id="targeted-unordered"),
        pytest.param("targeted_cache_control", None, id="targeted-none"),
        pytest.param("targeted_cache_control", ["CDN Cache Control"], id="targeted-not-a-name"),
        pytest.param("targeted_cache_control", [b"cdn-cache-control"], id="targeted-bytes"),
        pytest.param("targeted_cache_control", ["Cache-Control"], id="targeted-cache-control"),
        pytest.param(
            "targeted_cache_control",
            ["CDN-Cache-Control", "cdn-cache-control"],
            id="targeted-twice",
        ),
        pytest.param("heuristic_freshness", 1, id="heuristic_freshness-int"),
        pytest.param("heuristic_fraction", 0, id="heuristic_fraction-zero"),
        pytest.param("heuristic_fraction", 1.5, id="heuristic_fraction-over-one"),
        pytest.param("heuristic_fraction", math.nan, id="heuristic_fraction-nan"),
        pytest.param("heuristic_fraction", "0.1", id="heuristic_fraction-str"),
        pytest.param("heuristic_fraction", True, id="heuristic_fraction-bool"),
        pytest.param("heuristic_max_ttl", -1, id="heuristic_max_ttl-negative"),
        pytest.param("heuristic_max_ttl", math.inf, id="heuristic_max_ttl-inf"),
        pytest.param("heuristic_max_ttl", None, id="heuristic_max_ttl-none"),
        pytest.param("freeze_gc", "yes", id="freeze_gc-str"),
        pytest.param("freeze_gc", 1, id="freeze_gc-int"),
    ],
)
def test_middleware_bad_option_raises(cache: RedisCache, option: str, value: object) -> None:
    options: dict[str, Any] = {option: value}
    with pytest.raises(ConfigError, match=names_option(option)) as info:
        CacheMiddleware(app, cache=cache, **options)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, CacheError)


@pytest.mark.parametrize(
    ("options", "option"),
    [
        pytest.param({"bypass_token": "secret"}, "bypass_token", id="token-without-header"),
        pytest.param(
            {"bypass_header": "x-bypass", "bypass_token": ""},
            "bypass_token",
            id="token-empty",
        ),
        pytest.param(
            {"bypass_header": "x-bypass", "bypass_token": 123},
            "bypass_token",
            id="token-int",
        ),
    ],
)
def test_middleware_bad_option_pair_raises(
    cache: RedisCache, options: dict[str, Any], option: str
) -> None:
    with pytest.raises(ConfigError, match=names_option(option)):
        CacheMiddleware(app, cache=cache, **options)


@pytest.mark.parametrize(
    "not_a_cache",
    [None, "redis://localhost", fakeredis.FakeAsyncRedis(), object()],
    ids=["none", "url", "client", "object"],
)
def test_middleware_cache_not_a_redis_cache_raises(not_a_cache: object) -> None:
    options: dict[str, Any] = {"cache": not_a_cache}
    with pytest.raises(ConfigError, match=names_option("cache")):
        CacheMiddleware(app, **options)


def test_middleware_good_options_accepted(cache: RedisCache) -> None:
    middleware = CacheMiddleware(
        app,
        cache=cache,
        default_ttl=0,
        rules={"/api/*": 10, re.compile(r"\.json$"): NEVER},
        exclude=["/health", re.compile("^/internal/")],
        vary_on=["Accept-Language", "X-Tenant"],
        ignore_query_params=["utm_*"],
        max_body_size=0,
        cacheable_statuses=[200, 404],
        cache_set_cookie=True,
        bypass_header="X-Cache-Bypass",
        bypass_token="secret",
        honour_request_cache_control=False,
        cache_name="edge-1",
        timeout=0.5,
    )
    config = middleware.config
    assert middleware.cache is cache
    assert config.default_ttl == 0
    assert config.vary_on_names == ("accept-language", "x-tenant")
    assert config.statuses == frozenset({200, 404})
    assert config.bypass_header_bytes == b"x-cache-bypass"
    assert config.rule_for("/api/x") == (True, 10)
    assert config.rule_for("/a.json") == (True, None)
    assert config.is_excluded("/internal/x")


# -- misspelt options --------------------------------------------------------------------


def test_a_misspelt_option_is_named_with_the_nearest_one(cache: RedisCache) -> None:
    options: dict[str, Any] = {"defualt_ttl": 60}
    with pytest.raises(ConfigError) as info:
        CacheMiddleware(app, cache=cache, **options)
    assert str(info.value) == (
        "defualt_ttl: unknown option of CacheMiddleware; did you mean 'default_ttl'?"
    )


def test_every_unknown_option_is_named(cache: RedisCache) -> None:
    options: dict[str, Any] = {"vary": ["X-Tenant"], "zzz": 1}
    with pytest.raises(ConfigError, match=names_option("vary")) as info:
        CacheMiddleware(app, cache=cache, **options)
    assert "vary: unknown option of CacheMiddleware; did you mean 'vary_on'?" in str(info.value)
    assert "zzz: unknown option of CacheMiddleware (see CacheMiddleware's options)" in str(
        info.value
    )


def test_a_missing_cache_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^cache: a required option \(the RedisCache to use\)$"):
        CacheMiddleware(app)  # type: ignore[call-arg]


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
def test_a_misspelt_option_is_named_when_the_app_builds_its_stack(
    cache: RedisCache, framework: str
) -> None:
    # add_middleware only keeps the options: the middleware is made when the stack is
    # built (at the first request or lifespan), which is where the error comes from.
    asgi_app = FastAPI() if framework == "fastapi" else Starlette()
    options: dict[str, Any] = {"defualt_ttl": 60}
    asgi_app.add_middleware(CacheMiddleware, cache=cache, **options)
    with pytest.raises(ConfigError, match=r"^defualt_ttl: .*did you mean 'default_ttl'\?$"):
        asgi_app.build_middleware_stack()


def test_a_subclass_with_options_of_its_own_is_checked_against_them(cache: RedisCache) -> None:
    class Tenanted(CacheMiddleware):
        def __init__(self, app: Any, *, tenant: str, **options: Any) -> None:
            super().__init__(app, **options)
            self.tenant = tenant

    class Named(CacheMiddleware):
        def __init__(self, app: Any, *, cache: RedisCache, label: str = "") -> None:
            super().__init__(app, cache=cache)
            self.label = label

    # A subclass taking **options: its own __init__ says what it takes.
    assert Tenanted(app, tenant="a", cache=cache, default_ttl=5).config.default_ttl == 5
    assert Named(app, cache=cache, label="x").label == "x"
    with pytest.raises(ConfigError, match=r"^lable: unknown option of Named; did you mean 'label'"):
        Named(app, cache=cache, lable="x")  # type: ignore[call-arg]


def test_the_signature_is_the_options_one(cache: RedisCache) -> None:
    # What inspect (help(), IDEs, docs) shows of the class: __init__'s options.
    parameters = inspect.signature(CacheMiddleware).parameters
    assert list(parameters)[:3] == ["app", "cache", "default_ttl"]
    assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    # An instance's signature is its __call__'s, as an ASGI app's.
    instance = CacheMiddleware(app, cache=cache)
    assert list(inspect.signature(instance).parameters) == ["scope", "receive", "send"]


#: Every CacheMiddleware option's default, as README.md's "Options" table states it.
MIDDLEWARE_DEFAULTS: dict[str, object] = {
    "default_ttl": None,
    "rules": {},
    "exclude": (),
    "vary_on": (),
    "ignore_query_params": (),
    "host_aliases": {},
    "max_body_size": 1048576,
    "cacheable_statuses": frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501}),
    "cache_set_cookie": False,
    "bypass_header": None,
    "bypass_token": None,
    "honour_request_cache_control": True,
    "cache_name": "redis-cache",
    "timeout": 0.1,
    "tag_rules": {},
    "keep_tag_header": False,
    "invalidate_on_unsafe": True,
    "purge_token": None,
    "purge_path": "/_cache/purge",
    "stale_while_revalidate": 0,
    "stale_if_error": 0,
    "stale_on_error_grace": 0,
    "keep_for_revalidation": 60,
    "add_etag": False,
    "coalesce": True,
    "coalesce_timeout": 5,
    "hit_for_pass_ttl": 10,
    "max_background_refreshes": 32,
    "shutdown_timeout": 5,
    "share_cookie_requests": False,
    "ignore_cookies": (),
    "credential_headers": (),
    "error_ttl": 10,
    "invalidate_locations": True,
    "targeted_cache_control": ("CDN-Cache-Control",),
    "heuristic_freshness": False,
    "heuristic_fraction": 0.1,
    "heuristic_max_ttl": 86400,
    "freeze_gc": True,
}


def readme_options() -> dict[str, str]:
    """Return README.md's options table: option name -> its default column, unquoted."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text.split("\n## Options\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (.+?) \|", section, flags=re.MULTILINE)
    return {name: default.strip("`") for name, default in rows}


def test_middleware_defaults(cache: RedisCache) -> None:
    config = CacheMiddleware(app, cache=cache).config
    actual = {name: getattr(config, name) for name in MIDDLEWARE_DEFAULTS}
    actual["cacheable_statuses"] = config.statuses
    assert actual == MIDDLEWARE_DEFAULTS
    assert CacheConfig() == config
    assert config.bypass_header_bytes is None
    assert config.rule_for("/anything") == (False, None)
    assert not config.is_excluded("/anything")
    assert config.tags_for("/anything") == ()


def test_middleware_defaults_match_readme_options_table() -> None:
    documented = readme_options()
    keyword_only = [
        p.name
        for p in inspect.signature(CacheMiddleware).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    assert set(documented) == set(keyword_only) == {"cache", *MIDDLEWARE_DEFAULTS}
    assert documented.pop("cache") == "required"
    statuses = documented.pop("cacheable_statuses")
    assert frozenset(map(int, statuses.split())) == MIDDLEWARE_DEFAULTS["cacheable_statuses"]
    assert {k: ast.literal_eval(v) for k, v in documented.items()} == {
        k: v for k, v in MIDDLEWARE_DEFAULTS.items() if k != "cacheable_statuses"
    }


def test_targeted_cache_control_keeps_its_order_lowercased() -> None:
    config = CacheConfig(targeted_cache_control=["Redis-Cache-Control", "CDN-Cache-Control"])
    assert config.targeted_fields == (b"redis-cache-control", b"cdn-cache-control")
    assert CacheConfig(targeted_cache_control=()).targeted_fields == ()


@pytest.mark.parametrize("status", [200, 303, 599])
def test_cacheable_statuses_bounds_accepted(status: int) -> None:
    assert CacheConfig(cacheable_statuses={status}).statuses == frozenset({status})


def test_vary_on_names_lowercased_and_deduplicated() -> None:
    config = CacheConfig(vary_on=["Accept", "accept", "X-A"])
    assert config.vary_on_names == ("accept", "x-a")


# -- RedisCache ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "namespace",
    [
        pytest.param("a{b", id="open-brace"),
        pytest.param("a}b", id="close-brace"),
        pytest.param("{ns}", id="hash-tag"),
        pytest.param("a:b", id="colon"),
        pytest.param("a b", id="space"),
        pytest.param(" ns", id="leading-space"),
        pytest.param("", id="empty"),
        pytest.param("n" * 65, id="65-chars"),
        pytest.param("caf\u00e9", id="non-ascii"),
        pytest.param("a*b", id="glob-star"),
        pytest.param(None, id="none"),
        pytest.param(b"cache", id="bytes"),
        pytest.param("cache\n", id="trailing-newline"),
    ],
)
def test_redis_cache_bad_namespace_raises(namespace: object) -> None:
    options: dict[str, Any] = {"namespace": namespace}
    with pytest.raises(ConfigError, match=names_option("namespace")):
        RedisCache(fakeredis.FakeAsyncRedis(), **options)


@pytest.mark.parametrize("namespace", ["a", "n" * 64, "shop.v2-eu_1"])
def test_redis_cache_good_namespace_accepted(namespace: str) -> None:
    assert RedisCache(fakeredis.FakeAsyncRedis(), namespace=namespace).namespace == namespace


def test_redis_cache_decode_responses_raises() -> None:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    with pytest.raises(ConfigError, match=names_option("client")):
        RedisCache(client)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: RedisCache(fakeredis.FakeAsyncRedis()), id="client"),
        pytest.param(lambda: RedisCache.from_url("redis://127.0.0.1:6379/0"), id="from_url"),
    ],
)
def test_redis_cache_defaults(make: Callable[[], RedisCache]) -> None:
    cache = make()
    assert cache.namespace == "cache"
    assert cache._purger.on_purge is None
    assert (cache.breaker.threshold, cache.breaker.cooldown) == (5, 5.0)
    assert cache.breaker.state == "closed"
    assert cache._state.generation_interval == 1.0
    assert cache.admin_timeout == 5.0


def test_redis_cache_from_url_retries_once_and_connects_fast() -> None:
    cache = RedisCache.from_url("redis://127.0.0.1:6379/0")
    # The client's retry, and the copy each connection of its pool runs commands with.
    connection = cache.client.connection_pool.make_connection()
    for retry in (cache.client.get_connection_kwargs()["retry"], connection.retry):
        assert retry._retries in (0, 1)  # not redis-py's default 3, nor -1 ("forever")
    assert connection.socket_connect_timeout == 0.5
    assert connection.socket_timeout is None


def test_redis_cache_client_not_owned() -> None:
    client = fakeredis.FakeAsyncRedis()
    cache = RedisCache(client)
    assert cache.client is client
    assert cache._owns_client is False


@pytest.mark.parametrize(
    "url",
    ["nope://x", "http://localhost:6379", "localhost:6379", "", "redis://localhost:port"],
)
def test_redis_cache_from_url_bad_url_raises(url: str) -> None:
    with pytest.raises(ConfigError, match=names_option("url")):
        RedisCache.from_url(url)


BAD_TIMEOUTS: dict[str, object] = {
    "zero": 0,
    "negative": -1,
    "str": "1",
    "none": None,
    "nan": math.nan,
    "bool": True,
}


@pytest.mark.parametrize(
    ("option", "value"),
    [pytest.param("connect_timeout", v, id=f"connect_timeout-{k}") for k, v in BAD_TIMEOUTS.items()]
    # None is socket_timeout's default (no socket timeout), so it is not bad there.
    + [
        pytest.param("socket_timeout", v, id=f"socket_timeout-{k}")
        for k, v in BAD_TIMEOUTS.items()
        if v is not None
    ],
)
def test_redis_cache_from_url_bad_timeout_raises(option: str, value: object) -> None:
    options: dict[str, Any] = {option: value}
    with pytest.raises(ConfigError, match=names_option(option)):
        RedisCache.from_url("redis://localhost:6379/0", **options)


def test_redis_cache_from_url_bad_namespace_raises() -> None:
    with pytest.raises(ConfigError, match=names_option("namespace")):
        RedisCache.from_url("redis://localhost:6379/0", namespace="a:b")


def test_redis_cache_from_url_forces_bytes_and_owns_client() -> None:
    cache = RedisCache.from_url(
        "redis://localhost:6379/0", namespace="shop", socket_timeout=0.25, decode_responses=True
    )
    kwargs = cache.client.get_connection_kwargs()
    assert kwargs["decode_responses"] is False
    assert kwargs["socket_timeout"] == 0.25
    assert cache.namespace == "shop"
    assert cache._owns_client is True


# -- CacheConfig.rule_for and is_excluded -------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "path", "expected"),
    [
        pytest.param({"/api/*": 10}, "/api/items", (True, 10), id="glob"),
        pytest.param({"/api/*": 10}, "/api/v1/items/3", (True, 10), id="star-crosses-slash"),
        pytest.param({"/api/*": 10}, "/api", (False, None), id="glob-needs-slash"),
        pytest.param({"/api/*": 10}, "/v1/api/items", (False, None), id="glob-anchored-start"),
        pytest.param({"/api": 10}, "/api/items", (False, None), id="glob-anchored-end"),
        pytest.param({"/item/?": 10}, "/item/1", (True, 10), id="question-one-char"),
        pytest.param({"/item/?": 10}, "/item/12", (False, None), id="question-not-two"),
        pytest.param({"/v[12]/*": 10}, "/v2/x", (True, 10), id="char-class"),
        pytest.param({"/API/*": 10}, "/api/x", (False, None), id="case-sensitive"),
        pytest.param({"*.json": 5}, "/a/b/c.json", (True, 5), id="suffix-glob"),
        pytest.param(
            {"/api/*": 10, "/api/private/*": None},
            "/api/private/x",
            (True, 10),
            id="first-match-wins",
        ),
        pytest.param(
            {"/api/private/*": None, "/api/*": 10},
            "/api/private/x",
            (True, None),
            id="first-match-wins-never",
        ),
        pytest.param(
            {"/api/private/*": None, "/api/*": 10},
            "/api/public",
            (True, 10),
            id="falls-through-to-second",
        ),
        pytest.param({"/admin/*": NEVER}, "/admin/x", (True, None), id="never-is-matched"),
        pytest.param({"/admin/*": NEVER}, "/x", (False, None), id="no-match"),
        pytest.param({re.compile("/api/"): 10}, "/v1/api/x", (True, 10), id="regex-search"),
        pytest.param({re.compile(r"\.json$"): 5}, "/a/b.json", (True, 5), id="regex-suffix"),
        pytest.param({re.compile(r"\.json$"): 5}, "/a/b.jsonx", (False, None), id="regex-miss"),
        pytest.param({re.compile("^/api"): 10}, "/v1/api", (False, None), id="regex-anchored"),
        pytest.param({}, "/api", (False, None), id="no-rules"),
    ],
)
def test_rule_for(rules: dict[Any, float | None], path: str, expected: tuple[bool, Any]) -> None:
    assert CacheConfig(rules=rules).rule_for(path) == expected


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        pytest.param("/health", True, id="exact-glob"),
        pytest.param("/healthz", False, id="glob-anchored"),
        pytest.param("/static/css/a.css", True, id="glob-star-crosses-slash"),
        pytest.param("/internal/metrics", True, id="regex"),
        pytest.param("/x/internal/metrics", False, id="regex-anchored-by-caret"),
        pytest.param("/a/secret/b", True, id="regex-search-middle"),
        pytest.param("/", False, id="root"),
    ],
)
def test_is_excluded(path: str, excluded: bool) -> None:
    config = CacheConfig(
        exclude=["/health", "/static/*", re.compile("^/internal/"), re.compile("/secret/")]
    )
    assert config.is_excluded(path) is excluded


def test_is_excluded_without_patterns() -> None:
    assert CacheConfig().is_excluded("/health") is False


# -- CacheConfig-only options (purge endpoint, tags) --------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        pytest.param("purge_token", "short", id="purge_token-short"),
        pytest.param("purge_token", "x" * 15, id="purge_token-15-chars"),
        pytest.param("purge_token", b"x" * 32, id="purge_token-bytes"),
        pytest.param("purge_path", "_cache/purge", id="purge_path-relative"),
        pytest.param("purge_path", "", id="purge_path-empty"),
        pytest.param("purge_path", None, id="purge_path-none"),
        pytest.param("tag_rules", {"/a": ["t" * (MAX_TAG_LENGTH + 1)]}, id="tag_rules-long-tag"),
        pytest.param("tag_rules", {"/a": [1]}, id="tag_rules-int-tag"),
    ],
)
def test_config_bad_option_raises(option: str, value: object) -> None:
    options: dict[str, Any] = {option: value}
    with pytest.raises(ConfigError, match=names_option(option)):
        CacheConfig(**options)


def test_config_purge_options_accepted() -> None:
    config = CacheConfig(purge_token="x" * 16, purge_path="/admin/purge")
    assert (config.purge_token, config.purge_path) == ("x" * 16, "/admin/purge")


def test_tags_for_collects_every_matching_rule_in_order() -> None:
    config = CacheConfig(
        tag_rules={
            "/products/*": ["products"],
            re.compile(r"/products/\d+$"): ["product-page", "catalogue"],
            "/blog/*": ["blog"],
            "/products/*/reviews": ["t" * MAX_TAG_LENGTH],
        }
    )
    assert config.tags_for("/products/12") == ("products", "product-page", "catalogue")
    assert config.tags_for("/products/12/reviews") == ("products", "t" * MAX_TAG_LENGTH)
    assert config.tags_for("/about") == ()
