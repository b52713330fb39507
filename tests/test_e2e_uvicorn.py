"""One end-to-end run: a real uvicorn on loopback, a real Redis, real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server(redis_server: RedisServer, namespace: str) -> Iterator[str]:
    port = free_port()
    env = dict(os.environ, REDIS_URL=redis_server.url, E2E_NAMESPACE=namespace)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")])
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.e2e_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{base}/calls", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("uvicorn did not start") from None
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


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
