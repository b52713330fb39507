"""Local Redis Cluster and Sentinel set-ups, started on free loopback ports for the tests.

The failover tests drive ``CountingApp`` through the middleware with the helpers at the end.

Every process runs under ``timeout`` (so it stops by itself even if the session is killed),
binds 127.0.0.1, keeps nothing on disk, and is killed, with its temporary directory removed,
when the fixture ends, whatever the outcome. Every wait is bounded and fails with a message
saying what it waited for.

- ``redis_cluster`` (session): 3 primaries, no replicas; the shared suite's ``cluster`` backend.
- ``failover_cluster`` (one test): 3 primaries, each with a replica, ``cluster-node-timeout``
  1000 ms, so that a killed primary's replica is promoted within a few seconds.
- ``sentinel_setup`` (one test): a master, a replica and a sentinel watching them
  (``down-after-milliseconds`` 1000, ``failover-timeout`` 3000).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import NoReturn

import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from redis_cache_middleware import CacheMiddleware, RedisCache

#: Longest life of any process started here (seconds): they stop by themselves after it.
PROCESS_LIFETIME = 1800
#: cluster-node-timeout (ms): how long a primary may be silent before it is failed over.
NODE_TIMEOUT_MS = 1000
SENTINEL_SERVICE = "rcm-primary"

REQUIRE_REDIS = os.environ.get("REDIS_CACHE_REQUIRE_REDIS", "") not in ("", "0")


def unavailable(reason: str) -> NoReturn:
    """Skip (or, with REDIS_CACHE_REQUIRE_REDIS=1, fail) a test needing a real Redis."""
    if REQUIRE_REDIS:
        pytest.fail(f"a real Redis is required (REDIS_CACHE_REQUIRE_REDIS=1): {reason}")
    pytest.skip(f"no real Redis: {reason}")


def free_ports(n: int) -> list[int]:
    """Return ``n`` distinct free loopback ports (held open together while chosen)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_until(
    what: str, check: Callable[[], bool], timeout: float, interval: float = 0.05
) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last})")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)


@dataclass
class Node:
    """One redis-server (or sentinel) process on a loopback port."""

    port: int
    process: subprocess.Popen[bytes]
    pid: int = 0  # the redis-server's own pid (the Popen is its ``timeout`` wrapper)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return _client(self.port)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        for pid in (self.pid, self.process.pid):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # timeout(1) passes SIGTERM on to redis-server
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.kill()
        elif self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def start_node(port: int, workdir: str, *extra: str, sentinel: bool = False) -> Node:
    """Start ``redis-server`` (in sentinel mode with ``sentinel``) and wait for its PING."""
    binary = shutil.which("redis-server")
    timeout_bin = shutil.which("timeout")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH")
    if timeout_bin is None:
        raise RuntimeError("timeout(1) is not on PATH")
    if sentinel:
        conf = os.path.join(workdir, f"sentinel-{port}.conf")
        with open(conf, "w") as f:
            f.write("\n".join(extra) + "\n")
        args = [binary, conf, "--sentinel", "--port", str(port), "--bind", "127.0.0.1"]
    else:
        args = [
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
            "--dbfilename",
            f"dump-{port}.rdb",
            *extra,
        ]
    process = subprocess.Popen(
        [timeout_bin, str(PROCESS_LIFETIME), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=workdir,
    )
    node = Node(port=port, process=process)
    client = node.client()
    try:
        try:
            wait_until(f"redis-server on port {port}", lambda: bool(client.ping()), 10)
        except RuntimeError:
            node.stop()
            raise
        node.pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    return node


@dataclass
class LocalCluster:
    """A Redis Cluster of local processes."""

    nodes: list[Node]
    workdir: str

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL naming every node as a startup node."""
        return "redis+cluster://" + ",".join(n.address for n in self.nodes)

    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", n.port) for n in self.nodes]

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def primaries(self) -> list[Node]:
        """The nodes that are primaries now (asked of each live node)."""
        found = []
        for n in self.nodes:
            if n.process.poll() is not None:
                continue
            c = n.client()
            try:
                if c.info("replication")["role"] == "master":
                    found.append(n)
            finally:
                c.close()
        return found

    def replica_of(self, primary: Node) -> Node:
        """The node replicating ``primary``."""
        c = primary.client()
        try:
            info = c.info("replication")
        finally:
            c.close()
        port = int(info["slave0"]["port"])
        return self.node(port)

    def healthy(self) -> bool:
        """Every live node says cluster_state:ok and sees every slot served."""
        for n in self.nodes:
            if n.process.poll() is not None:
                continue
            c = n.client()
            try:
                info = c.cluster("INFO")
            finally:
                c.close()
            fields = {_text(k): _text(v).strip() for k, v in dict(info).items()}
            if fields.get("cluster_state") != "ok" or fields.get("cluster_slots_ok") != "16384":
                return False
            if fields.get("cluster_known_nodes") != str(len(self.nodes)):
                return False
        return True

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_cluster(primaries: int = 3, replicas: int = 0) -> LocalCluster:
    """Start ``primaries * (1 + replicas)`` cluster-enabled servers and join them."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli is not on PATH")
    count = primaries * (1 + replicas)
    workdir = tempfile.mkdtemp(prefix="rcm-cluster-")
    cluster = LocalCluster(nodes=[], workdir=workdir)
    try:
        ports = free_ports(2 * count)
        for port, bus in zip(ports[:count], ports[count:], strict=True):
            cluster.nodes.append(
                start_node(
                    port,
                    workdir,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    str(bus),
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    str(NODE_TIMEOUT_MS),
                    # A replica takes over however long it was cut off (tests kill at will).
                    "--cluster-replica-validity-factor",
                    "0",
                )
            )
        create = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(n.address for n in cluster.nodes),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if create.returncode != 0:
            raise RuntimeError(
                "redis-cli --cluster create failed: "
                + create.stdout.decode(errors="replace")[-2000:]
                + create.stderr.decode(errors="replace")[-2000:]
            )
        wait_until("the cluster to report cluster_state:ok on every node", cluster.healthy, 30)
        if replicas:

            def synced() -> bool:
                for n in cluster.nodes:
                    c = n.client()
                    try:
                        info = c.info("replication")
                    finally:
                        c.close()
                    if info["role"] == "slave" and info.get("master_link_status") != "up":
                        return False
                return len(cluster.primaries()) == primaries

            wait_until("every replica to sync with its primary", synced, 30)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@dataclass
class SentinelSetup:
    """A master, its replica and one sentinel watching them, all local."""

    master: Node
    replica: Node
    sentinel: Node
    workdir: str
    service: str = SENTINEL_SERVICE

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.service}/0"

    def master_port(self) -> int:
        """The master's port as the sentinel names it now."""
        c = self.sentinel.client()
        try:
            _host, port = c.sentinel_get_master_addr_by_name(self.service)
        finally:
            c.close()
        return int(port)

    def stop(self) -> None:
        for n in (self.sentinel, self.replica, self.master):
            n.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_sentinel() -> SentinelSetup:
    workdir = tempfile.mkdtemp(prefix="rcm-sentinel-")
    nodes: list[Node] = []
    try:
        m_port, r_port, s_port = free_ports(3)
        master = start_node(m_port, workdir)
        nodes.append(master)
        replica = start_node(r_port, workdir, "--replicaof", "127.0.0.1", str(m_port))
        nodes.append(replica)

        def replica_synced() -> bool:
            c = replica.client()
            try:
                return c.info("replication").get("master_link_status") == "up"
            finally:
                c.close()

        wait_until("the replica to sync with the master", replica_synced, 20)
        sentinel = start_node(
            s_port,
            workdir,
            f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {m_port} 1",
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000",
            f"sentinel failover-timeout {SENTINEL_SERVICE} 3000",
            f"sentinel parallel-syncs {SENTINEL_SERVICE} 1",
            sentinel=True,
        )
        nodes.append(sentinel)
        setup = SentinelSetup(master, replica, sentinel, workdir)

        def sentinel_sees_replica() -> bool:
            c = sentinel.client()
            try:
                replicas = c.sentinel_slaves(SENTINEL_SERVICE)
            finally:
                c.close()
            return any(int(r["port"]) == r_port and "s_down" not in r["flags"] for r in replicas)

        wait_until("the sentinel to discover the replica", sentinel_sees_replica, 20)
    except BaseException:
        for n in nodes:
            n.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return setup


def _have_binaries() -> str | None:
    for name in ("redis-server", "redis-cli", "timeout"):
        if shutil.which(name) is None:
            return f"{name} is not on PATH"
    return None


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A 3-primary Redis Cluster for the whole session (the ``cluster`` backend)."""
    missing = _have_binaries()
    if missing:
        unavailable(missing)
    try:
        cluster = start_cluster(3, 0)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        unavailable(f"could not start a local Redis Cluster: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def failover_cluster() -> Iterator[LocalCluster]:
    """3 primaries, each with one replica, for a test that kills a primary."""
    missing = _have_binaries()
    if missing:
        unavailable(missing)
    try:
        cluster = start_cluster(3, 1)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        unavailable(f"could not start a local Redis Cluster with replicas: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def sentinel_setup() -> Iterator[SentinelSetup]:
    """A master, a replica and a sentinel, for a test that kills the master."""
    missing = _have_binaries()
    if missing:
        unavailable(missing)
    try:
        setup = start_sentinel()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        unavailable(f"could not start a local Sentinel set-up: {exc}")
    try:
        yield setup
    finally:
        setup.stop()


# -- driving the middleware through a failover ---------------------------------------------


@dataclass
class CountingApp:
    """Answers ``/item/{n}`` with a body naming ``n``, cacheable for 5 minutes; counts calls."""

    calls: Counter[str] = field(default_factory=Counter)

    async def item(self, request: Request) -> Response:
        path = request.url.path
        self.calls[path] += 1
        return Response(
            f"item {request.path_params['n']}", headers={"cache-control": "max-age=300"}
        )

    def client(self, cache: RedisCache, **options: object) -> httpx.AsyncClient:
        app = Starlette(routes=[Route("/item/{n}", self.item)])
        app.add_middleware(CacheMiddleware, cache=cache, **options)  # type: ignore[arg-type]
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        )


def body_for(path: str) -> str:
    return f"item {path.rsplit('/', 1)[-1]}"


def is_hit(response: httpx.Response) -> bool:
    parts = [p.strip() for p in response.headers.get("cache-status", "").split(";")]
    return "hit" in parts


@dataclass
class Round:
    """What one pass over every path saw."""

    failures: list[str]
    hits: set[str]
    app_calls: int


async def one_round(client: httpx.AsyncClient, app: CountingApp, paths: list[str]) -> Round:
    """GET every path once (concurrently); note wrong answers, hits and app calls."""
    before = sum(app.calls.values())
    responses = await asyncio.gather(*(client.get(p) for p in paths), return_exceptions=True)
    failures: list[str] = []
    hits: set[str] = set()
    for path, response in zip(paths, responses, strict=True):
        if isinstance(response, BaseException):
            failures.append(f"{path}: raised {response!r}")
        elif response.status_code != 200 or response.text != body_for(path):
            failures.append(f"{path}: {response.status_code} {response.text[:80]!r}")
        elif is_hit(response):
            hits.add(path)
    return Round(failures, hits, sum(app.calls.values()) - before)


async def serve_until(
    what: str,
    client: httpx.AsyncClient,
    app: CountingApp,
    paths: list[str],
    done: Callable[[], Awaitable[bool]],
    timeout: float,
) -> tuple[int, list[str], float]:
    """Keep serving every path until ``done()``; return rounds run, failures, seconds taken.

    Raises AssertionError naming ``what`` when ``timeout`` passes first.
    """
    start = time.monotonic()
    rounds = 0
    failures: list[str] = []
    while True:
        result = await one_round(client, app, paths)
        rounds += 1
        failures += result.failures
        if await done():
            return rounds, failures, time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


async def until_all_hits(
    client: httpx.AsyncClient, app: CountingApp, paths: list[str], timeout: float
) -> tuple[float, list[str]]:
    """Serve rounds until one round answers every path from the cache with no app call;
    return the seconds it took and the failures seen meanwhile."""
    start = time.monotonic()
    failures: list[str] = []
    last: Round | None = None
    while time.monotonic() - start < timeout:
        last = await one_round(client, app, paths)
        failures += last.failures
        if not last.failures and last.hits == set(paths) and last.app_calls == 0:
            return time.monotonic() - start, failures
        await asyncio.sleep(0.1)
    missing = sorted(set(paths) - (last.hits if last else set()))
    raise AssertionError(
        f"hits did not resume within {timeout:.0f}s: last round missed {missing[:5]} "
        f"({len(missing)} paths), app calls {last.app_calls if last else '?'}"
    )
