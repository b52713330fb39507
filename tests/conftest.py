"""Shared fixtures: the Redis backends every shared test runs against.

``backend`` is parametrised over an in-process ``fakeredis``, a real Redis server and a local
3-primary Redis Cluster (``cluster_fixtures``, started once per session). The real
one is ``REDIS_URL`` when set, otherwise a ``redis-server`` this session starts on a free
loopback port. When neither is possible the real-Redis cases skip with the reason in the
summary; with ``REDIS_CACHE_REQUIRE_REDIS=1`` (as ``.ci/run`` sets) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio

from redis_cache_middleware import RedisCache

from .cluster_fixtures import (  # noqa: F401 (fixtures)
    LocalCluster,
    failover_cluster,
    redis_cluster,
    sentinel_setup,
    unavailable,
)
from .helpers import free_port


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class RedisServer:
    """A redis-server process this test session started (or None when REDIS_URL is used)."""

    url: str
    port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    workdir: str | None = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.process.kill()
                self.process.wait()

    def start(self) -> None:
        """Start (again) the server on the same port."""
        assert self.port is not None and self.workdir is not None
        self.process = start_redis_process(self.port, self.workdir)


def start_redis_process(port: int, workdir: str) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    assert binary is not None
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        while True:
            try:
                if client.ping():
                    return process
            except redis.RedisError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise RuntimeError(f"redis-server did not start on port {port}") from None
                time.sleep(0.05)
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real Redis: REDIS_URL, or a redis-server started on a free loopback port."""
    url = os.environ.get("REDIS_URL")
    if url:
        try:
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        except redis.RedisError as exc:
            unavailable(f"REDIS_URL={url} does not answer ({exc})")
        yield RedisServer(url=url)
        return
    if shutil.which("redis-server") is None:
        unavailable("REDIS_URL is unset and redis-server is not on PATH")
    workdir = tempfile.mkdtemp(prefix="rcm-redis-")
    port = free_port()
    server = RedisServer(url=f"redis://127.0.0.1:{port}/0", port=port, workdir=workdir)
    try:
        server.start()
    except RuntimeError as exc:
        unavailable(str(exc))
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A redis-server started for one test alone, which the test may stop and start."""
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not on PATH")
    workdir = tempfile.mkdtemp(prefix="rcm-redis-")
    port = free_port()
    server = RedisServer(url=f"redis://127.0.0.1:{port}/0", port=port, workdir=workdir)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


ClientFactory = Callable[[], Any]


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Any]:
    """A redis-py client of the real Redis alone (the lane's tests: it speaks on a socket)."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture(params=["fakeredis", "redis", "cluster"])
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the Redis backend a shared test runs against: fakeredis, a real Redis, or
    a local 3-primary Redis Cluster (started once per session, see ``cluster_fixtures``)."""
    return str(request.param)


@pytest.fixture(params=["starlette", "fastapi"])
def framework(request: pytest.FixtureRequest) -> str:
    """The framework the origin app of a ``helpers.make_client`` test is built with."""
    return str(request.param)


@pytest.fixture
def fake_server() -> fakeredis.FakeServer:
    """The data of the ``fakeredis`` backend, one per test (what ``FakeAsyncRedis()`` would
    make, named so that ``backend_url`` can serve it to other processes)."""
    return fakeredis.FakeServer(version=(7,))


@pytest.fixture
async def redis_client(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A fresh async client on the backend under test (closed afterwards)."""
    if backend == "fakeredis":
        client: Any = fakeredis.FakeAsyncRedis(server=request.getfixturevalue("fake_server"))
    elif backend == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        client = redis.asyncio.RedisCluster(
            startup_nodes=[
                redis.asyncio.cluster.ClusterNode(host, port)
                for host, port in cluster.startup_nodes()
            ]
        )
        # Learn the slot map now: the first command of a cold cluster client also runs
        # CLUSTER SLOTS, which could exceed the middleware's 100 ms budget on a busy CI host.
        await client.initialize()
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        client = redis.asyncio.Redis.from_url(server.url)
    yield client
    await client.aclose()


@pytest.fixture
def backend_url(backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A URL for ``RedisCache.from_url`` in another process, reaching the same data as
    ``redis_client``: the real Redis, the cluster, or for ``fakeredis`` this test's
    ``fake_server`` served over TCP (fakeredis's ``TcpFakeServer``, in a thread)."""
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        yield server.url
    elif backend == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        yield cluster.url
    else:
        tcp = fakeredis.TcpFakeServer(("127.0.0.1", 0))
        tcp.fake_server = request.getfixturevalue("fake_server")
        thread = threading.Thread(target=tcp.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"redis://127.0.0.1:{tcp.server_address[1]}/0"
        finally:
            tcp.shutdown()
            tcp.server_close()
            thread.join(timeout=5)


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses, so tests can share one real Redis."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def cache(redis_client: Any, namespace: str) -> AsyncIterator[RedisCache]:
    """A RedisCache over the backend under test, in a namespace of its own."""
    yield RedisCache(redis_client, namespace=namespace)
