"""A configurable origin app and a client to drive the middleware through it.

``Origin`` (answers per ``Spec``, on Starlette or FastAPI) is the app for tests of caching
behaviour; use it unless a test needs what it cannot do. The others, each for one need:
``Origin`` in ``tests/test_security.py`` renders attacker-controlled input with any function
of the request; ``Versioned`` in ``tests/test_stale.py`` changes versions and answers
conditional requests with 304; ``tests/attack_app.py`` and ``tests/e2e_app.py`` are modules a
real uvicorn imports in another process (hostile input, and caching across workers).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, RedisCache


@dataclass
class Spec:
    """What the origin answers for a path."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None  # None: a body naming the path and the call number
    chunks: list[bytes] | None = None  # streamed instead of body
    echo_headers: tuple[str, ...] = ()  # request headers echoed into the body
    raises: bool = False


@dataclass
class Origin:
    """The app behind the middleware: counts calls per path, answers per ``specs``.

    A body it makes names the path, the query, the call number and the ``echo_headers``
    (``/p?q=1 call=2 x-a=1``), so a test can tell exactly which call a response came from.
    """

    specs: dict[str, Spec] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)

    async def respond(self, request: Request) -> Response:
        path = request.url.path
        self.calls[path] += 1
        spec = self.specs.get(path, Spec())
        if spec.raises:
            raise RuntimeError("origin failed")
        headers = list(spec.headers)
        if spec.chunks is not None:
            chunks = spec.chunks

            async def stream() -> AsyncIterator[bytes]:
                for chunk in chunks:
                    yield chunk

            response: Response = StreamingResponse(stream(), status_code=spec.status)
        else:
            body = spec.body
            if body is None:
                echoed = ";".join(f"{h}={request.headers.get(h)}" for h in spec.echo_headers)
                body = f"{path}?{request.url.query} call={self.calls[path]} {echoed}".encode()
            response = Response(body, status_code=spec.status)
        for name, value in headers:
            response.headers.append(name, value)
        return response


#: Every method the origin answers: the safe ones and each unsafe one that invalidates.
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def starlette_app(origin: Origin) -> Starlette:
    return Starlette(routes=[Route("/{path:path}", origin.respond, methods=METHODS)])


def fastapi_app(origin: Origin) -> FastAPI:
    app = FastAPI()
    app.add_api_route("/{path:path}", origin.respond, methods=METHODS)
    return app


FRAMEWORKS: dict[str, Callable[[Origin], Any]] = {
    "starlette": starlette_app,
    "fastapi": fastapi_app,
}


#: The middleware's Redis timeout in tests about caching rather than about failing: a call
#: past the product's 100 ms goes to the app (fail open, as it should), and a test run on a
#: loaded machine sees such stalls (a GC pass, a busy core) now and then. The tests of that
#: bound (test_faults, test_failures, test_breaker) use the product's default.
TEST_TIMEOUT = 1.0
#: ``CacheMiddleware``'s default ``timeout``.
PRODUCT_TIMEOUT = 0.1


def make_client(
    cache: RedisCache,
    origin: Origin,
    framework: str = "starlette",
    **options: Any,
) -> httpx.AsyncClient:
    options.setdefault("timeout", TEST_TIMEOUT)
    app = FRAMEWORKS[framework](origin)
    app.add_middleware(CacheMiddleware, cache=cache, **options)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def hit_raw(*headers: tuple[bytes, bytes], ttl: int) -> list[list[tuple[bytes, bytes]]]:
    """The raw headers of a hit on an entry stored 0 or 1 s before, with ``ttl`` s at first."""
    return [
        [
            *headers,
            (b"age", b"%d" % age),
            (b"cache-status", b"redis-cache; hit; ttl=%d" % (ttl - age)),
        ]
        for age in (0, 1)
    ]


def middleware_of(client: httpx.AsyncClient) -> CacheMiddleware:
    """The ``CacheMiddleware`` inside a client made by ``make_client`` (its stack built)."""
    app: Any = client._transport.app  # type: ignore[attr-defined]
    stack = app.middleware_stack or app.build_middleware_stack()
    app.middleware_stack = stack
    while not isinstance(stack, CacheMiddleware):
        stack = stack.app
    return stack


def http_scope(path: str, host: str = "testserver") -> dict[str, Any]:
    """A plain GET scope, for tests that drive the middleware with raw ASGI calls."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", host.encode())],
        "client": ("127.0.0.1", 50000),
        "server": (host, 80),
    }


ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def uvicorn_on_loopback(
    target: str,
    *,
    redis_url: str,
    namespace: str,
    probe: str,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    stderr: IO[bytes] | None = None,
    settle: float = 0.0,
) -> Iterator[str]:
    """Serve ``target`` (``module:app``) with a real uvicorn on a free loopback port, its
    cache on ``redis_url`` in ``namespace`` (``REDIS_URL``, ``E2E_NAMESPACE``); yield the
    base URL once ``probe`` answers (and ``settle`` seconds more), stop it afterwards."""
    port = free_port()
    environ = dict(os.environ, REDIS_URL=redis_url, E2E_NAMESPACE=namespace, **(env or {}))
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(ROOT / "src"), environ.get("PYTHONPATH", "")]
    )
    command = [sys.executable, "-m", "uvicorn", *args, target, "--host", "127.0.0.1"]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env=environ,
        stderr=stderr,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}{probe}", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("uvicorn did not start") from None
                time.sleep(0.1)
        time.sleep(settle)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


async def asgi_call(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    """Call an ASGI app with one empty-bodied request; return every message it sent."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent
