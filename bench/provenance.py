"""What a result file records about where it was measured: the machine (CPU, memory, kernel,
Python), the versions of the packages in the venvs, the redis-py parser, and the git commit
with a hash of ``src/``, since the library is measured as it is on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from variants import OWN_VENV

ROOT = Path(__file__).resolve().parent.parent


def machine_info() -> dict[str, object]:
    import platform

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
    }


def package_versions() -> dict[str, str]:
    from importlib import metadata

    names = [
        "redis-cache-middleware",
        "starlette",
        "fastapi",
        "uvicorn",
        "uvloop",
        "httptools",
        "redis",
        "hiredis",
        "msgpack",
        "fastapi-cache2",
        "cashews",
        "httpx",
        "matplotlib",
        "pydantic",
    ]
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    for peer, venv in OWN_VENV.items():
        # What the peer's own venv runs it on.
        probe = (
            "import json, importlib.metadata as m\n"
            "out = {}\n"
            "for n in ('litestar', 'redis', 'hiredis', 'uvicorn', 'uvloop', 'httptools'):\n"
            "    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: out[n] = 'not installed'\n"
            "print(json.dumps(out))"
        )
        try:
            found = subprocess.run(
                [str(venv / "bin" / "python"), "-c", probe],
                capture_output=True,
                text=True,
                timeout=30,
            )
            for name, version in json.loads(found.stdout).items():
                versions[f"{name} ({peer} venv)" if name != peer else name] = version
        except (OSError, ValueError, subprocess.SubprocessError):
            versions[peer] = "not installed"
    return versions


def redis_parser() -> str:
    from redis.utils import HIREDIS_AVAILABLE

    return "hiredis" if HIREDIS_AVAILABLE else "python"


def git_state() -> dict[str, object]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    digest = hashlib.sha256()
    for path in sorted((ROOT / "src").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return {
        "commit": git("rev-parse", "HEAD"),
        "library_changes_uncommitted": bool(git("status", "--porcelain", "--", "src")),
        # The library is measured as it is on disk: this names that exact source.
        "src_sha256": digest.hexdigest(),
    }
