"""The ``redis-cache`` command line, run as a subprocess against a real Redis."""

from __future__ import annotations

import calendar
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import redis.asyncio

from redis_cache_middleware import RedisCache

from .conftest import RedisServer, free_port
from .helpers import Origin, Spec, make_client

pytestmark = pytest.mark.anyio

SRC = str(Path(__file__).resolve().parent.parent / "src")


async def run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m redis_cache_middleware ARGS`` and return what it did (text output)."""
    environ = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, environ.get("PYTHONPATH")]))
    environ.update(env or {})
    done = await anyio.run_process(
        [sys.executable, "-m", "redis_cache_middleware", *args], check=False, env=environ
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


@pytest.fixture
async def real_cache(redis_server: RedisServer, namespace: str) -> AsyncIterator[RedisCache]:
    """A cache on the real Redis the CLI talks to, in a namespace of its own."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    # Strict generation checks: a clear() by the CLI process is seen at the next lookup.
    yield RedisCache(client, namespace=namespace, generation_check_interval=0)
    await client.aclose()


@pytest.fixture
def cli_args(redis_server: RedisServer, namespace: str) -> list[str]:
    return ["--redis-url", redis_server.url, "--namespace", namespace]


ORIGIN_SPECS = {
    "/t1": Spec(headers=[("surrogate-key", "a b")]),
    "/t2": Spec(headers=[("surrogate-key", "b")]),
    "/v": Spec(headers=[("vary", "accept-language"), ("surrogate-key", "v")]),
}


async def seed(cache: RedisCache, urls: list[str]) -> Origin:
    origin = Origin(specs=ORIGIN_SPECS)
    async with make_client(cache, origin, default_ttl=60) as client:
        for url in urls:
            assert (await client.get(url)).headers["cache-status"].endswith("; stored"), url
    return origin


async def states(cache: RedisCache, urls: list[str], origin: Origin) -> list[str]:
    out = []
    async with make_client(cache, origin, default_ttl=60) as client:
        for url in urls:
            out.append(
                "hit" if "; hit;" in (await client.get(url)).headers["cache-status"] else "miss"
            )
    return out


def assert_ok(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


# -- purge ------------------------------------------------------------------------------


async def test_purge_url(real_cache: RedisCache, cli_args: list[str]) -> None:
    urls = ["/a", "/a?x=1", "/b"]
    origin = await seed(real_cache, urls)
    done = await run_cli(*cli_args, "purge", "--url", "http://testserver/a")
    assert_ok(done)
    assert done.stdout == "purged 1 entry\n"
    assert await states(real_cache, urls, origin) == ["miss", "hit", "hit"]


async def test_purge_several_urls_json(real_cache: RedisCache, cli_args: list[str]) -> None:
    urls = ["/a", "/b", "/c"]
    origin = await seed(real_cache, urls)
    done = await run_cli(
        *cli_args, "--json", "purge", "--url", "http://testserver/a", "--url", "http://testserver/b"
    )
    assert_ok(done)
    assert json.loads(done.stdout) == {"purged": 2}
    assert await states(real_cache, urls, origin) == ["miss", "miss", "hit"]


async def test_purge_tag(real_cache: RedisCache, cli_args: list[str]) -> None:
    urls = ["/t1", "/t2", "/c"]
    origin = await seed(real_cache, urls)
    done = await run_cli(*cli_args, "purge", "--tag", "b")
    assert_ok(done)
    assert done.stdout == "purged 2 entries\n"
    assert await states(real_cache, urls, origin) == ["miss", "miss", "hit"]


async def test_purge_path_prefix_every_host(real_cache: RedisCache, cli_args: list[str]) -> None:
    urls = ["/users", "/users/1?x=2", "/users2", "http://other.example/users/3"]
    origin = await seed(real_cache, urls)
    done = await run_cli(*cli_args, "purge", "--prefix", "/users")
    assert_ok(done)
    assert done.stdout == "purged 3 entries\n"
    assert await states(real_cache, urls, origin) == ["miss", "miss", "hit", "miss"]


async def test_purge_path_prefix_with_host(real_cache: RedisCache, cli_args: list[str]) -> None:
    urls = ["/users/1", "http://other.example/users/1"]
    origin = await seed(real_cache, urls)
    done = await run_cli(*cli_args, "purge", "--prefix", "/users", "--host", "other.example")
    assert_ok(done)
    assert done.stdout == "purged 1 entry\n"
    assert await states(real_cache, urls, origin) == ["hit", "miss"]


async def test_purge_url_prefix_is_that_host_only(
    real_cache: RedisCache, cli_args: list[str]
) -> None:
    urls = ["/users/1", "http://other.example/users/1"]
    origin = await seed(real_cache, urls)
    done = await run_cli(*cli_args, "--json", "purge", "--prefix", "http://testserver/users")
    assert_ok(done)
    assert json.loads(done.stdout) == {"purged": 1}
    assert await states(real_cache, urls, origin) == ["miss", "hit"]


async def test_url_tag_and_prefix_combine_in_one_purge(
    real_cache: RedisCache, cli_args: list[str]
) -> None:
    urls = ["/a", "/t1", "/users/1", "/users2", "/c"]
    origin = await seed(real_cache, urls)
    args = ["purge", "--url", "http://testserver/a", "--prefix", "/users", "--tag", "a"]
    done = await run_cli(*cli_args, "--json", *args)
    assert_ok(done)
    assert json.loads(done.stdout) == {"purged": 3}
    assert await states(real_cache, urls, origin) == ["miss", "miss", "miss", "hit", "hit"]


async def test_host_without_a_port_is_every_port_of_it(
    real_cache: RedisCache, cli_args: list[str]
) -> None:
    # The case: --host 127.0.0.1 purged 0 where 127.0.0.1:8000 purged 2.
    urls = [
        "http://127.0.0.1:8000/users/1",
        "http://127.0.0.1:8000/users/2",
        "http://127.0.0.1:9000/users/3",
        "http://127.0.0.2:8000/users/4",
    ]
    origin = await seed(real_cache, urls)
    done = await run_cli(*cli_args, "purge", "--prefix", "/users", "--host", "127.0.0.1:9000")
    assert_ok(done)
    assert done.stdout == "purged 1 entry\n"
    done = await run_cli(*cli_args, "purge", "--prefix", "/users", "--host", "127.0.0.1")
    assert_ok(done)
    assert done.stdout == "purged 2 entries\n"
    assert await states(real_cache, urls, origin) == ["miss", "miss", "miss", "hit"]


async def test_host_aliases_on_the_command_line(
    real_cache: RedisCache, cli_args: list[str]
) -> None:
    # The app keys localhost:8000 as 127.0.0.1:8000; told so, the command line does too.
    real_cache.alias_hosts({"localhost:8000": "127.0.0.1:8000"})
    urls = ["http://127.0.0.1:8000/a", "http://127.0.0.1:8000/p/1", "http://127.0.0.1:8000/q/1"]
    origin = await seed(real_cache, urls)
    alias = ["--host-alias", "LOCALHOST:8000=127.0.0.1:8000"]
    done = await run_cli(*cli_args, *alias, "--json", "inspect", "http://localhost:8000/a")
    assert_ok(done)
    assert json.loads(done.stdout)["cached"] is True
    # Without the alias, localhost:8000 is another host, with nothing stored.
    done = await run_cli(*cli_args, "purge", "--url", "http://localhost:8000/a")
    assert done.stdout == "purged 0 entries\n"
    done = await run_cli(
        *cli_args,
        *alias,
        "purge",
        "--url",
        "http://localhost:8000/a",
        "--prefix",
        "http://localhost:8000/p",
    )
    assert_ok(done)
    assert done.stdout == "purged 2 entries\n"
    done = await run_cli(*cli_args, *alias, "purge", "--prefix", "/q", "--host", "localhost")
    assert_ok(done)
    assert done.stdout == "purged 1 entry\n"
    assert await states(real_cache, urls, origin) == ["miss", "miss", "miss"]


async def test_purge_all(real_cache: RedisCache, cli_args: list[str], namespace: str) -> None:
    urls = ["/a", "/t1", "http://other.example/b"]
    origin = await seed(real_cache, urls)
    done = await run_cli(*cli_args, "purge", "--all")
    assert_ok(done)
    assert done.stdout == f"cleared namespace '{namespace}'\n"
    assert await states(real_cache, urls, origin) == ["miss", "miss", "miss"]


async def test_purge_all_json(real_cache: RedisCache, cli_args: list[str], namespace: str) -> None:
    await seed(real_cache, ["/a"])
    done = await run_cli(*cli_args, "--json", "purge", "--all")
    assert_ok(done)
    assert json.loads(done.stdout) == {"purged": 0, "cleared": True, "namespace": namespace}


async def test_purge_nothing_cached(real_cache: RedisCache, cli_args: list[str]) -> None:
    done = await run_cli(*cli_args, "purge", "--url", "http://testserver/none")
    assert_ok(done)
    assert done.stdout == "purged 0 entries\n"


async def test_redis_url_defaults_to_env(
    real_cache: RedisCache, redis_server: RedisServer, namespace: str
) -> None:
    origin = await seed(real_cache, ["/a"])
    done = await run_cli(
        "--namespace", namespace, "purge", "--url", "http://testserver/a",
        env={"REDIS_URL": redis_server.url},
    )  # fmt: skip
    assert_ok(done)
    assert done.stdout == "purged 1 entry\n"
    assert await states(real_cache, ["/a"], origin) == ["miss"]


# -- inspect ----------------------------------------------------------------------------


ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


async def test_inspect_json(real_cache: RedisCache, cli_args: list[str], namespace: str) -> None:
    before = time.time()
    await seed(real_cache, ["/t1?q=1"])
    done = await run_cli(*cli_args, "--json", "inspect", "http://testserver/t1?q=1")
    assert_ok(done)
    document = json.loads(done.stdout)
    assert document["url"] == "http://testserver/t1?q=1"
    assert document["cached"] is True
    [variant] = document["variants"]
    assert variant["key"].startswith(f"{namespace}:")
    assert variant["status"] == 200
    assert ISO_UTC.match(variant["stored_at"])
    stored = calendar.timegm(time.strptime(variant["stored_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert before - 1 <= stored <= time.time() + 1
    assert 0 <= variant["age"] < 30
    assert 30 < variant["ttl_left"] <= 60
    assert variant["fresh_for"] == 60
    assert variant["stale_for"] == 0
    assert variant["tags"] == ["a", "b"]
    assert variant["size"] == len(b"/t1?q=1 call=1 ")
    assert variant["vary"] == []
    assert variant["vary_values"] == {}


async def test_inspect_json_lists_each_variant(real_cache: RedisCache, cli_args: list[str]) -> None:
    origin = Origin(specs=ORIGIN_SPECS)
    async with make_client(real_cache, origin, default_ttl=60) as client:
        await client.get("/v", headers={"accept-language": "en"})
        await client.get("/v", headers={"accept-language": "fr"})
        await client.get("/v")
    done = await run_cli(*cli_args, "--json", "inspect", "http://testserver/v")
    assert_ok(done)
    variants = json.loads(done.stdout)["variants"]
    assert len(variants) == 3
    assert all(v["vary"] == ["accept-language"] for v in variants)
    values = sorted(str(v["vary_values"]["accept-language"]) for v in variants)
    assert values == ["None", "en", "fr"]
    assert len({v["key"] for v in variants}) == 3


async def test_inspect_text(real_cache: RedisCache, cli_args: list[str]) -> None:
    origin = Origin(specs=ORIGIN_SPECS)
    async with make_client(real_cache, origin, default_ttl=60) as client:
        await client.get("/v", headers={"accept-language": "en"})
    done = await run_cli(*cli_args, "inspect", "http://testserver/v")
    assert_ok(done)
    lines = done.stdout.splitlines()
    assert lines[0] == "http://testserver/v: 1 stored variant"
    fields = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in lines[3:])
    assert list(fields) == [
        "key",
        "status",
        "stored at",
        "age",
        "ttl left",
        "fresh for",
        "stale for",
        "tags",
        "size",
        "vary",
    ]
    assert lines[2] == "variant 1"
    assert fields["status"] == "200"
    assert ISO_UTC.match(fields["stored at"])
    assert fields["fresh for"] == "1 min 0 s"
    assert fields["stale for"] == "0.0 s"
    assert fields["tags"] == "v"
    assert fields["vary"] == "accept-language: 'en'"
    assert re.fullmatch(r"\d+ bytes", fields["size"])


async def test_inspect_not_cached(real_cache: RedisCache, cli_args: list[str]) -> None:
    done = await run_cli(*cli_args, "inspect", "http://testserver/none")
    assert_ok(done)
    assert done.stdout == "http://testserver/none: not cached\n"
    done = await run_cli(*cli_args, "--json", "inspect", "http://testserver/none")
    assert_ok(done)
    assert json.loads(done.stdout) == {
        "url": "http://testserver/none",
        "cached": False,
        "variants": [],
    }


# -- stats ------------------------------------------------------------------------------


async def test_stats_json_counts_entries(
    real_cache: RedisCache, cli_args: list[str], namespace: str
) -> None:
    await seed(real_cache, ["/a", "/b", "/t1"])
    origin = Origin(specs=ORIGIN_SPECS)
    async with make_client(real_cache, origin, default_ttl=60) as client:
        await client.get("/v", headers={"accept-language": "en"})
        await client.get("/v", headers={"accept-language": "fr"})
    done = await run_cli(*cli_args, "--json", "stats")
    assert_ok(done)
    document = json.loads(done.stdout)
    assert document["namespace"] == namespace
    assert document["entries"] == 5
    assert document["bytes"] > 0
    assert document["sampled"] is False
    assert document["keys_scanned"] >= 5


async def test_stats_says_when_sampled(real_cache: RedisCache, cli_args: list[str]) -> None:
    await seed(real_cache, ["/a", "/b", "/c"])
    done = await run_cli(*cli_args, "stats", "--sample", "1")
    assert_ok(done)
    lines = done.stdout.splitlines()
    assert "entries      3" in lines
    assert re.fullmatch(r"keys scanned \d+", lines[-1])
    assert any(
        line.startswith("bytes ") and line.endswith("estimated from a sample of the entries")
        for line in lines
    )
    done = await run_cli(*cli_args, "--json", "stats", "--sample", "1")
    assert json.loads(done.stdout)["sampled"] is True


async def test_stats_empty_namespace(cli_args: list[str]) -> None:
    done = await run_cli(*cli_args, "--json", "stats")
    assert_ok(done)
    assert json.loads(done.stdout)["entries"] == 0


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["stats"], ["purge", "--all"], ["inspect", "http://testserver/a"]]
)
async def test_unreachable_redis_is_exit_2(command: list[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = await run_cli("--redis-url", url, *command)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(f"error: cannot reach Redis at {url}: ")
    assert len(done.stderr.splitlines()) == 1
    assert "Traceback" not in done.stderr


async def test_unreachable_redis_message_hides_the_password() -> None:
    port = free_port()
    done = await run_cli("--redis-url", f"redis://user:s3cret@127.0.0.1:{port}/0", "stats")
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"error: cannot reach Redis at redis://user:***@127.0.0.1:{port}/0: "
    )
    assert "s3cret" not in done.stderr


@pytest.mark.parametrize("url", ["foo://127.0.0.1/0", "redis://127.0.0.1:notaport/0"])
async def test_malformed_redis_url_is_exit_2(url: str) -> None:
    done = await run_cli("--redis-url", url, "stats")
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: --redis-url: malformed URL '{url}': ")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["purge"], "purge: give --url, --tag or --prefix (they combine), or --all"),
        (["purge", "--all", "--tag", "b"], "--all: clears everything, so it goes alone"),
        (["purge", "--url", "http://x/a", "--all"], "goes alone, not with --url"),
        (["purge", "--url", "/a"], "--url: expected an absolute http(s) URL, got '/a'"),
        (["purge", "--prefix", "users"], "--prefix: expected a path starting with '/'"),
        (["purge", "--tag", "b", "--host", "x"], "--host: only goes with --prefix"),
        (
            ["purge", "--prefix", "http://x/a", "--host", "x"],
            "--host: only goes with path prefixes, not URLs",
        ),
        (["purge", "--prefix", "/a", "--host", "http://x/"], "--host: expected a host"),
        (["purge", "--prefix", "/a", "--host", ""], "--host: expected a host"),
        (["purge", "--prefix", "/a", "--host", "a@b"], "--host: expected a host"),
        (["--host-alias", "localhost", "stats"], "--host-alias: expected SPELLING=HOST"),
        (["--host-alias", "a=http://b/", "stats"], "--host-alias: 'http://b/' is not a host"),
        (["--host-alias", "a=b", "--host-alias", "b=c", "stats"], "itself an alias"),
        (["--host-alias", "a=b", "--host-alias", "a=c", "stats"], "'a' is given two hosts"),
        (["inspect"], "the following arguments are required: URL"),
        (["inspect", "testserver/a"], "URL: expected an absolute http(s) URL"),
        (["stats", "--sample", "0"], "must be at least 1, got 0"),
        (["--namespace", "a b", "stats"], "--namespace: 1-64 letters"),
    ],
)
async def test_bad_arguments_are_exit_2(args: list[str], message: str) -> None:
    # An unreachable Redis: arguments are checked before any connection is tried.
    done = await run_cli("--redis-url", f"redis://127.0.0.1:{free_port()}/0", *args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert message in done.stderr
    assert "cannot reach Redis" not in done.stderr
    assert "Traceback" not in done.stderr


async def test_help_is_exit_0() -> None:
    done = await run_cli("--help")
    assert done.returncode == 0
    assert done.stdout.startswith("usage: redis-cache")
    for command in ("purge", "inspect", "stats"):
        assert command in done.stdout


def test_main_in_process_returns_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    from redis_cache_middleware.cli import main

    assert main(["purge"]) == 2
    assert "purge: give --url, --tag or --prefix" in capsys.readouterr().err
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert main(["--redis-url", url, "stats"]) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot reach Redis at {url}: ")
