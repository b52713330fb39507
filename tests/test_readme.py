"""README.md, run as written: its apps against a real Redis, its tour against the example app.

The README's conventions, which these tests hold it to (its "Development" section says so):

* A ```` ```python ```` block is a complete app, unless the line before it is
  ``<!-- fragment -->``. A complete app is saved as ``app.py`` and served by a real uvicorn on
  loopback with ``REDIS_URL`` set to the tests' Redis. The first ```` ```bash ```` block after
  it must hold its run command (``uvicorn app:app``) and a ``curl`` of a
  ``http://127.0.0.1:8000`` URL: that URL must answer a miss that is stored, then a hit.
* A fragment is part of an app (names it does not define are the reader's): it must compile,
  top-level ``await`` allowed.
* The ```` ```bash ```` block after ``<!-- tour -->`` is run by ``bash`` as it stands against
  ``python -m example_app`` in its default mode (its own fakeredis on a loopback port),
  after the ``export`` line the app prints, as the README tells the reader to do.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .conftest import RedisServer
from .helpers import ROOT, free_port, uvicorn_on_loopback

README = ROOT / "README.md"
FRAGMENT = "<!-- fragment -->"
TOUR = "<!-- tour -->"
BLOCK = re.compile(r"^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
#: Where the README's samples and tour say the app listens.
README_BASE = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    mark: str | None  # the HTML comment on the line before the block, if any
    line: int  # where the block starts in README.md (1-based), for messages


def blocks(text: str) -> list[Block]:
    """Every fenced block of ``text``, in order, with the marker comment before it."""
    found = []
    for match in BLOCK.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        mark = before if before.startswith("<!--") else None
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(match["lang"], match["body"], mark, line))
    return found


def readme_blocks() -> list[Block]:
    return blocks(README.read_text())


def apps() -> list[tuple[Block, Block]]:
    """Each complete app of the README with the bash block that runs it."""
    found = readme_blocks()
    pairs = []
    for index, block in enumerate(found):
        if block.lang != "python" or block.mark == FRAGMENT:
            continue
        runner = next((b for b in found[index + 1 :] if b.lang == "bash"), None)
        assert runner is not None, f"README.md:{block.line}: an app with no bash block after it"
        pairs.append((block, runner))
    return pairs


def fragments() -> list[Block]:
    return [b for b in readme_blocks() if b.lang == "python" and b.mark == FRAGMENT]


def test_the_readme_is_read_whole() -> None:
    text = "a\n<!-- fragment -->\n```python\nx = 1\n```\n\n```bash\necho\n```\n"
    assert blocks(text) == [
        Block("python", "x = 1\n", FRAGMENT, 3),
        Block("bash", "echo\n", None, 7),
    ]
    # The samples this test exists for: the FastAPI and Starlette quick starts and the
    # per-route settings are complete apps, and there is one tour.
    assert len(apps()) >= 3
    assert len(fragments()) >= 4
    assert [b.mark for b in readme_blocks()].count(TOUR) == 1
    every = [b for b in readme_blocks() if b.lang == "python"]
    assert len(every) == len(apps()) + len(fragments())


@pytest.mark.parametrize("fragment", fragments(), ids=lambda b: f"line-{b.line}")
def test_fragment_compiles(fragment: Block) -> None:
    compile(fragment.body, f"README.md:{fragment.line}", "exec", ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def first_curl_path(runner: Block) -> str:
    match = re.search(r"curl [^\n]*?" + re.escape(README_BASE) + r"(/\S*)", runner.body)
    assert match, f"README.md:{runner.line}: no curl of {README_BASE} to try the app with"
    return match[1]


@pytest.mark.parametrize(("app", "runner"), apps(), ids=lambda b: f"line-{b.line}")
def test_app_answers_a_miss_then_a_hit(
    app: Block, runner: Block, redis_server: RedisServer, tmp_path: Path
) -> None:
    assert "uvicorn app:app" in runner.body, f"README.md:{runner.line}: no run command"
    path = first_curl_path(runner)
    (tmp_path / "app.py").write_text(app.body)
    # A host of its own keys this run apart from any other on a shared Redis.
    headers = {"Host": f"readme-{uuid.uuid4().hex[:12]}.test"}
    with uvicorn_on_loopback(
        "app:app",
        redis_url=redis_server.url,
        namespace="unused",
        probe=f"/readme-probe-{uuid.uuid4().hex[:8]}",
        env={"PYTHONPATH": str(tmp_path)},
    ) as base:
        first = httpx.get(base + path, headers=headers, timeout=10)
        second = httpx.get(base + path, headers=headers, timeout=10)
    assert first.status_code == 200, first.text
    assert first.headers["cache-status"].startswith("redis-cache; fwd=uri-miss; fwd-status=200")
    assert first.headers["cache-status"].endswith("; stored")
    assert second.headers["cache-status"].startswith("redis-cache; hit; ttl=")
    assert second.content == first.content


# -- the tour ----------------------------------------------------------------------------


@pytest.fixture
def example_app() -> Iterator[tuple[str, str]]:
    """``python -m example_app`` in its default mode on free ports: (base URL, export line)."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CACHE_PURGE_TOKEN")}
    environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "src")])
    environ["UPSTREAM_LATENCY"] = "0.05"
    command = ["-m", "example_app", "--port", str(port), "--redis-port", "0"]
    process = subprocess.Popen(
        [sys.executable, *command, "--log-level", "warning"],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        export = ""
        for line in process.stdout:
            if line.strip().startswith("export REDIS_URL="):
                export = line.strip()
                break
        assert export, "the example app printed no export line"
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"{base}/upstream-calls", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, "the example app stopped"
                time.sleep(0.1)
        yield base, export
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()
            process.wait()


def test_tour_runs_against_the_example_app(example_app: tuple[str, str], tmp_path: Path) -> None:
    if shutil.which("curl") is None or shutil.which("bash") is None:
        pytest.skip("the tour needs curl and bash")
    base, export = example_app
    [tour] = [b for b in readme_blocks() if b.mark == TOUR]
    assert tour.lang == "bash"
    # The tour's `.venv/bin/redis-cache`, as the README's first command installs it.
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    shim = bin_dir / "redis-cache"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m redis_cache_middleware "$@"\n')
    shim.chmod(0o755)
    script = "set -euo pipefail\n" + export + "\n" + tour.body.replace(README_BASE, base)
    environ = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout.lower()
    lines = out.splitlines()
    statuses = [line for line in lines if line.startswith("cache-status:")]
    assert statuses == [
        "cache-status: redis-cache; fwd=uri-miss; fwd-status=200; stored",
        statuses[1],
        "cache-status: redis-cache; fwd=bypass; fwd-status=200; stored",
        "cache-status: redis-cache; fwd=uri-miss; fwd-status=200; stored",
    ]
    assert statuses[1] in (
        "cache-status: redis-cache; hit; ttl=10",
        "cache-status: redis-cache; hit; ttl=9",
    )
    assert '{"calls":1}' in out  # the hit spared the upstream
    assert re.search(r"^namespace +example$", out, re.M)  # stats
    assert re.search(r"^entries +1$", out, re.M)
    assert "1 stored variant" in out and "status     200" in out  # inspect
    assert lines.count('{"purged":1}') == 2  # PURGE of the quote, the prefix /users
    assert '"grace b. hopper"' in out
    assert "purged 1 entry" in out and "cleared namespace 'example'" in out
