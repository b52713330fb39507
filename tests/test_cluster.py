"""Redis Cluster: from_url's cluster form, slot-safe keys and purges, spread load, failover.

The shared suite already runs on the ``cluster`` backend (see ``conftest.backend``); these
tests check what only a cluster shows: where keys land, what each node is asked, and that a
killed primary costs no failed request.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from redis_cache_middleware import RedisCache, keys
from redis_cache_middleware.cache import FillLock
from redis_cache_middleware.entry import CachedEntry
from redis_cache_middleware.exceptions import ConfigError

from .cluster_fixtures import (
    CountingApp,
    LocalCluster,
    serve_until,
    until_all_hits,
    wait_until,
)

pytestmark = pytest.mark.anyio


def slot(key: str | bytes) -> int:
    return key_slot(key.encode() if isinstance(key, str) else key)


def slot_owners(cluster: LocalCluster) -> dict[int, int]:
    """Map every slot to the port of the primary serving it, as a live node says."""
    for node in cluster.nodes:
        if node.process.poll() is not None:
            continue
        c = node.client()
        try:
            ranges = c.execute_command("CLUSTER", "SLOTS")
        finally:
            c.close()
        owners: dict[int, int] = {}
        for start, end, primary, *_ in ranges:
            for s in range(int(start), int(end) + 1):
                owners[s] = int(primary[1])
        return owners
    raise AssertionError("no live node")


def node_stats(cluster: LocalCluster) -> dict[int, dict[str, int]]:
    """Per primary port: calls per command since the last CONFIG RESETSTAT."""
    result: dict[int, dict[str, int]] = {}
    for node in cluster.primaries():
        c = node.client()
        try:
            stats = c.info("commandstats")
        finally:
            c.close()
        result[node.port] = {
            name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()
        }
    return result


def reset_stats(cluster: LocalCluster) -> None:
    for node in cluster.primaries():
        c = node.client()
        try:
            c.config_resetstat()
        finally:
            c.close()


@pytest.fixture
def ns() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


# -- from_url ------------------------------------------------------------------------------


async def test_from_url_cluster_form_builds_an_owned_cluster_client(
    redis_cluster: LocalCluster, ns: str
) -> None:
    name = f"rcm-{uuid.uuid4().hex[:8]}"
    cache = RedisCache.from_url(redis_cluster.url, namespace=ns, client_name=name)
    assert isinstance(cache.client, RedisCluster)
    app = CountingApp()
    async with app.client(cache) as http:
        for _ in range(2):
            for n in range(12):
                assert (await http.get(f"/item/{n}")).status_code == 200
    assert sum(app.calls.values()) == 12  # the second pass was all hits

    def connections() -> int:
        count = 0
        for node in redis_cluster.nodes:
            c = node.client()
            try:
                count += sum(1 for client in c.client_list() if client["name"] == name)
            finally:
                c.close()
        return count

    assert connections() >= 2  # the URLs spread over more than one node
    await cache.aclose()
    wait_until("the owned cluster client's connections to close", lambda: connections() == 0, 5)


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("redis+cluster://", "empty host"),
        ("redis+cluster://127.0.0.1:abc", "bad port"),
        ("redis+cluster://127.0.0.1:70000", "out of range"),
        ("redis+cluster://127.0.0.1:7000/3", "only database 0"),
        ("redis+cluster://127.0.0.1:7000/?socket_timeout=1", "no query string"),
        ("redis+cluster://[::1:7000", "unclosed"),
        ("redis+sentinel://127.0.0.1:26379", "service_name"),
        ("redis+sentinel://127.0.0.1:26379/svc/x", "bad database number"),
        ("redis+sentinel://127.0.0.1:26379/a/0/b", "service_name"),
    ],
)
def test_bad_cluster_and_sentinel_urls_raise_config_error(url: str, detail: str) -> None:
    with pytest.raises(ConfigError, match=r"^url: .*" + detail):
        RedisCache.from_url(url)


async def test_cluster_url_parts_reach_the_client() -> None:
    cache = RedisCache.from_url(
        "rediss+cluster://u%40x:p%3Aw@10.0.0.1:7001,[::1]:7002,h3/", socket_timeout=0.25
    )
    client = cache.client
    assert isinstance(client, RedisCluster)
    nodes = sorted(n.name for n in client.nodes_manager.startup_nodes.values())
    assert nodes == sorted(["10.0.0.1:7001", "::1:7002", "h3:6379"])
    kwargs = client.get_connection_kwargs()
    assert (kwargs["username"], kwargs["password"]) == ("u@x", "p:w")
    assert kwargs["socket_timeout"] == 0.25 and kwargs["decode_responses"] is False
    assert kwargs.get("connection_class").__name__ == "SSLConnection"
    await cache.aclose()


def test_cluster_client_with_decode_responses_is_refused(redis_cluster: LocalCluster) -> None:
    host, port = redis_cluster.startup_nodes()[0]
    client = RedisCluster(host=host, port=port, decode_responses=True)
    with pytest.raises(ConfigError, match="decode_responses"):
        RedisCache(client)


# -- key layout: one URL, one slot ---------------------------------------------------------


async def test_every_key_of_a_url_shares_its_slot(redis_cluster: LocalCluster, ns: str) -> None:
    host, port = redis_cluster.startup_nodes()[0]
    client = RedisCluster(host=host, port=port)
    cache = RedisCache(client, namespace=ns)
    try:
        uhash = cache.hash_for_url("http://testserver/item/1")
        base = keys.url_key(ns, cache.generation, uhash)
        # A varying URL with two variants, its lock and its hit-for-pass marker.
        entry = CachedEntry(
            status=200,
            headers=[(b"vary", b"accept")],
            body=b"x",
            stored_at=time.time(),
            fresh_for=60,
        )
        for value in (b"a", b"b"):
            await cache.store(uhash, entry, ttl=60, names=("accept",), values=[value])
        fill = FillLock("", uuid.uuid4().hex)
        assert await cache.acquire_fill(uhash, fill, 5, cache.generation) == 1
        await cache.release_fill(uhash, fill, cache.generation, pass_for=5)
        found = [
            k async for k in client.scan_iter(match=f"{ns}:*", target_nodes=RedisCluster.PRIMARIES)
        ]
        url_keys = [k for k in found if k.startswith(base.encode())]
        assert len(url_keys) == 5  # marker, 2 variants, variant set, hit-for-pass
        assert {slot(k) for k in url_keys} == {slot(base)}
        # Different URLs land on different slots (and so, nodes).
        slots = {slot(keys.url_key(ns, 0, cache.hash_for_url(f"http://h/{i}"))) for i in range(50)}
        assert len(slots) > 40
    finally:
        await client.aclose()


async def test_purges_and_scan_cover_every_primary(redis_cluster: LocalCluster, ns: str) -> None:
    """Entries on all three primaries: scan_stats counts them all, tag and prefix purges
    remove them all (their deletes grouped by slot), and nothing is left behind."""
    cache = RedisCache.from_url(redis_cluster.url, namespace=ns)
    await cache.client.initialize()
    owners = slot_owners(redis_cluster)
    app = CountingApp()
    paths = [f"/item/{n}" for n in range(60)]
    try:
        async with app.client(cache, tag_rules={"/item/*": ["items"]}) as http:
            for path in paths:
                assert (await http.get(path)).headers["cache-status"].endswith("stored")
        bases = [
            keys.url_key(ns, cache.generation, cache.hash_for_url(f"http://testserver{p}"))
            for p in paths
        ]
        assert len({owners[slot(b)] for b in bases}) == 3  # the entries span every primary
        stats = await cache.scan_stats()
        assert stats.entries == 60 and stats.bytes > 0

        assert await cache.purge_tag("items") == 60
        assert (await cache.scan_stats()).entries == 0
        async with app.client(cache) as http:
            for path in paths[:30]:
                await http.get(path)
        assert await cache.purge_prefix("/item") == 30
        assert (await cache.scan_stats()).entries == 0
        # Only index keys may remain, and no URL key at all.
        left = [
            k
            async for k in cache.client.scan_iter(
                match=f"{ns}:*", target_nodes=RedisCluster.PRIMARIES
            )
        ]
        assert not [k for k in left if b":{" in k and b":t:" not in k and b":p:" not in k]
    finally:
        await cache.aclose()


async def test_cli_stats_and_purge_on_a_cluster_url(redis_cluster: LocalCluster, ns: str) -> None:
    """The admin CLI takes the cluster URL: ``stats`` counts entries on every primary,
    ``purge --prefix`` removes them wherever they live."""
    cache = RedisCache.from_url(redis_cluster.url, namespace=ns)
    await cache.client.initialize()
    app = CountingApp()
    try:
        async with app.client(cache) as http:
            for n in range(40):
                await http.get(f"/item/{n}")

        async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
            return await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "redis_cache_middleware",
                    "--redis-url",
                    redis_cluster.url,
                    "--namespace",
                    ns,
                    "--json",
                    *args,
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )

        done = await cli("stats")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["entries"] == 40
        done = await cli("purge", "--prefix", "/item")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["purged"] == 40
        assert (await cache.scan_stats()).entries == 0
    finally:
        await cache.aclose()


async def snapshot(client: RedisCluster, ns: str) -> dict[bytes, tuple[bytes, int]]:
    """Every key of the namespace, on every primary: its serialised value and its PTTL."""
    found = [k async for k in client.scan_iter(match=f"{ns}:*", target_nodes=client.PRIMARIES)]
    result = {}
    for key in found:
        result[key] = (await client.dump(key), await client.pttl(key))
    return result


async def test_hits_touch_no_shared_key(redis_cluster: LocalCluster, ns: str) -> None:
    """Hits on many URLs are read on every primary, change no key of the namespace (no
    write, no TTL extended), and read the namespace's generation key at most once a second
    per process: there is no key every request touches."""
    cache = RedisCache.from_url(redis_cluster.url, namespace=ns)
    client = cache.client
    assert isinstance(client, RedisCluster)
    await client.initialize()
    app = CountingApp()
    paths = [f"/item/{n}" for n in range(30)]
    try:
        async with app.client(cache) as http:
            for path in paths:
                await http.get(path)
            await asyncio.sleep(1.1)  # the next lookup re-reads the generation once
            before = await snapshot(client, ns)
            reset_stats(redis_cluster)
            start = time.monotonic()
            for _ in range(10):
                for path in paths:
                    response = await http.get(path)
                    assert "hit" in response.headers["cache-status"]
            elapsed = time.monotonic() - start
            per_node = node_stats(redis_cluster)
            hits = keyspace_hits(redis_cluster)
            after = await snapshot(client, ns)
        assert app.calls.total() == 30
        assert all(n > 0 for n in hits.values()), hits  # every primary answers some hits
        assert sum(hits.values()) >= 300
        generation_reads = sum(s.get("get", 0) for s in per_node.values())
        assert generation_reads <= 1 + int(elapsed), (generation_reads, elapsed)
        assert before.keys() == after.keys()
        for key, (value, ttl) in before.items():
            assert after[key][0] == value, key  # nothing written
            assert after[key][1] <= ttl, key  # no TTL extended
    finally:
        await cache.aclose()


def keyspace_hits(cluster: LocalCluster) -> dict[int, int]:
    """Per primary port: keys found by reads since the last CONFIG RESETSTAT."""
    result = {}
    for node in cluster.primaries():
        c = node.client()
        try:
            result[node.port] = int(c.info("stats")["keyspace_hits"])
        finally:
            c.close()
    return result


# -- failover -------------------------------------------------------------------------------


async def test_primary_failover_fails_open_then_hits_resume(
    failover_cluster: LocalCluster, ns: str
) -> None:
    cluster = failover_cluster
    cache = RedisCache.from_url(cluster.url, namespace=ns)
    await cache.client.initialize()
    app = CountingApp()
    paths = [f"/item/{n}" for n in range(30)]
    try:
        async with app.client(cache) as http:
            warm = await until_all_hits_after_fill(http, app, paths)
            assert warm == []
            owners = slot_owners(cluster)

            def owner(path: str) -> int:
                base = keys.url_key(
                    ns, cache.generation, cache.hash_for_url(f"http://testserver{path}")
                )
                return owners[slot(base)]

            victim = max(cluster.primaries(), key=lambda n: sum(owner(p) == n.port for p in paths))
            on_victim = [p for p in paths if owner(p) == victim.port]
            assert on_victim
            replica = cluster.replica_of(victim)
            wait_until("the replica to catch up", lambda: caught_up(victim.client()), 10)

            victim.kill()
            killed_at = time.monotonic()

            async def promoted() -> bool:
                return await asyncio.to_thread(is_primary, replica.client())

            rounds, failures, down_for = await serve_until(
                "the replica's promotion", http, app, paths, promoted, timeout=30
            )
            assert failures == [], failures[:5]
            assert rounds >= 2  # requests were served while the primary was down
            assert down_for > 0.5

            resumed_in, failures = await until_all_hits(http, app, paths, timeout=30)
            assert failures == [], failures[:5]
            print(  # shown with -s: how long each phase took
                f"\nfailover: promoted {down_for:.1f}s after the kill ({rounds} rounds, "
                f"0 failed), all hits again {resumed_in:.1f}s later; "
                f"total {time.monotonic() - killed_at:.1f}s; {len(on_victim)} URLs on the victim"
            )
    finally:
        await cache.aclose()


async def until_all_hits_after_fill(http: Any, app: CountingApp, paths: list[str]) -> list[str]:
    for path in paths:
        await http.get(path)
    _, failures = await until_all_hits(http, app, paths, timeout=10)
    return failures


def caught_up(client: Any) -> bool:
    try:
        info = client.info("replication")
    finally:
        client.close()
    replica = info.get("slave0")
    return bool(replica) and int(replica["offset"]) >= int(info["master_repl_offset"])


def is_primary(client: Any) -> bool:
    try:
        return bool(client.info("replication")["role"] == "master")
    except redis.RedisError:
        return False
    finally:
        client.close()
