"""One end-to-end run: a real uvicorn on loopback, a real Redis, real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import RedisServer
from .helpers import uvicorn_on_loopback

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server(redis_server: RedisServer, namespace: str) -> Iterator[str]:
    with uvicorn_on_loopback(
        "tests.e2e_app:app", redis_url=redis_server.url, namespace=namespace, probe="/calls"
    ) as base:
        yield base


def test_uvicorn_miss_then_hit(server: str) -> None:
    with httpx.Client(base_url=server, timeout=5) as client:
        first = client.get("/items/7", params={"q": "x"})
        second = client.get("/items/7", params={"q": "x"})
        head = client.head("/items/7", params={"q": "x"})
        calls = client.get("/calls").json()["calls"]
    assert first.status_code == 200
    assert first.headers["cache-status"] == "redis-cache; fwd=uri-miss; fwd-status=200; stored"
    assert second.headers["cache-status"].startswith("redis-cache; hit; ttl=")
    assert second.content == first.content
    assert head.content == b"" and head.headers["content-length"] == str(len(first.content))
    assert calls == 1


def test_uvicorn_head_miss_fills_the_entry(server: str) -> None:
    # Over real HTTP: the HEAD's answer carries the GET's Content-Length and no body, and
    # the GET that follows is a hit on what the HEAD stored.
    with httpx.Client(base_url=server, timeout=5) as client:
        head = client.head("/items/8")
        get = client.get("/items/8")
        calls = client.get("/calls").json()["calls"]
    assert head.status_code == 200 and head.content == b""
    assert head.headers["cache-status"] == "redis-cache; fwd=uri-miss; fwd-status=200; stored"
    assert get.headers["cache-status"].startswith("redis-cache; hit; ttl=")
    assert head.headers["content-length"] == str(len(get.content))
    assert calls == 1
