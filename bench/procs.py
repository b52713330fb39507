"""Processes the benchmark starts: its own redis-server, one uvicorn per variant, and wrk;
the CPUs each may use, and the CPU time a server spends during a wrk run (``/proc``).

Everything listens on 127.0.0.1 only, on a port picked free, and is stopped by the harness
(by its own pid) when done, on error and on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

BENCH = Path(__file__).resolve().parent
WRK_DIR = BENCH / "wrk"

#: Every child process started, so that a Ctrl-C or an error stops them all.
_CHILDREN: list[subprocess.Popen[bytes]] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _affinity(cpus: list[int] | None):  # type: ignore[no-untyped-def]
    if not cpus:
        return None

    def apply() -> None:
        os.sched_setaffinity(0, cpus)

    return apply


def pin_threads(pid: int, cpus: list[int]) -> None:
    """Set the CPU affinity of every thread of a running process (redis-server has several:
    ``sched_setaffinity`` on the pid alone moves only its main thread)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(tid, cpus)


def _family(pid: int) -> list[int]:
    """``pid`` and its live descendants (every thread's ``children`` list, recursively)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tids = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                children = Path(f"/proc/{current}/task/{tid}/children").read_text()
            except OSError:
                continue
            todo.extend(int(c) for c in children.split())
    return found


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) that ``pid`` and its descendants have used so far, children
    they have reaped included: ``utime + stime + cutime + cstime`` of ``/proc/<pid>/stat``
    (all of a process's threads), which the kernel counts in clock ticks (1/``SC_CLK_TCK`` s)."""
    ticks = 0
    for member in _family(pid):
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
        except OSError:  # it exited meanwhile
            continue
        # The command name (field 2) is in parentheses and may hold spaces: split after it.
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[0] is field 3 (state); utime, stime, cutime, cstime are fields 14-17.
        ticks += sum(int(f) for f in fields[11:15])
    return ticks / _CLOCK_TICKS


def stop(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """Stop one child we started: SIGTERM, then SIGKILL after ``timeout``."""
    if process is None:
        return
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
    if process in _CHILDREN:
        _CHILDREN.remove(process)


def stop_all() -> None:
    for process in list(_CHILDREN):
        stop(process, timeout=5)


# -- redis-server ------------------------------------------------------------------------


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]
    workdir: str
    version: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)

    def stop(self) -> None:
        stop(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis(cpus: list[int] | None) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found (Debian package redis-server)")
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10
    ).stdout.strip()
    workdir = tempfile.mkdtemp(prefix="rcm-bench-redis-")
    port = free_port()
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
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_affinity(cpus),
    )
    _CHILDREN.append(process)
    server = RedisServer(port=port, process=process, workdir=workdir, version=version)
    client = server.client()
    deadline = time.monotonic() + 15
    while True:
        try:
            if client.ping():
                break
        except redis.exceptions.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"redis-server did not start on port {port}")
        time.sleep(0.05)
    client.close()
    return server


# -- uvicorn -----------------------------------------------------------------------------


@dataclass
class AppServer:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    info: dict[str, object] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def calls(self, client: httpx.Client) -> int:
        response = client.get(f"{self.base}/__bench/calls")
        response.raise_for_status()
        return int(response.json()["calls"])

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        stop(self.process)


def start_app(
    module: str,
    name: str,
    env: dict[str, str],
    cpus: list[int] | None,
    log_dir: Path,
    loop: str = "uvloop",
    http: str = "httptools",
    timeout: float = 30.0,
    python: str = sys.executable,
) -> AppServer:
    """Start ``uvicorn apps.<module>:app`` (one worker) on a free port; wait until it answers.

    Raises RuntimeError with the end of its log if it exits or does not answer in time.
    """
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed by the child's exit
    child_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            python,
            "-m",
            "uvicorn",
            f"apps.{module}:app",
            "--app-dir",
            str(BENCH),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            loop,
            "--http",
            http,
            "--no-access-log",
            "--log-level",
            "warning",
            "--lifespan",
            "on",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=child_env,
        cwd=str(BENCH),
        preexec_fn=_affinity(cpus),
    )
    log.close()
    _CHILDREN.append(process)
    server = AppServer(name=name, port=port, process=process, log_path=log_path)
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while True:
            if process.poll() is not None:
                tail = server.log_tail()
                stop(process)
                raise RuntimeError(f"uvicorn exited with code {process.returncode}:\n{tail}")
            try:
                response = client.get(f"{server.base}/__bench/calls")
                if response.status_code == 200:
                    server.info = response.json()
                    return server
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                tail = server.log_tail()
                stop(process)
                raise RuntimeError(f"uvicorn did not answer within {timeout:.0f} s:\n{tail}")
            time.sleep(0.05)


# -- wrk ---------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p99_9_ms: float
    max_ms: float
    errors: dict[str, int]
    bytes: int
    #: The server's CPU during the run (``server_pid`` given to ``run_wrk``), else None:
    #: CPU seconds used, wall seconds between the two readings, and derived per request.
    server_cpu_s: float | None = None
    server_wall_s: float | None = None

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.server_cpu_s is None or not self.requests:
            return None
        return self.server_cpu_s * 1e6 / self.requests

    @property
    def cpu_utilisation(self) -> float | None:
        """CPU seconds over wall seconds: ~1.0 is a server using a whole core (CPU-bound)."""
        if self.server_cpu_s is None or not self.server_wall_s:
            return None
        return self.server_cpu_s / self.server_wall_s

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "mean_ms": round(self.mean_ms, 3),
            "p50_ms": round(self.p50_ms, 3),
            "p90_ms": round(self.p90_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "p99_9_ms": round(self.p99_9_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "errors": self.errors,
            "bytes": self.bytes,
        }
        if self.server_cpu_s is not None:
            per_request, utilisation = self.cpu_us_per_request, self.cpu_utilisation
            data["server_cpu_s"] = round(self.server_cpu_s, 3)
            data["server_wall_s"] = round(self.server_wall_s or 0.0, 3)
            data["cpu_us_per_request"] = None if per_request is None else round(per_request, 1)
            data["cpu_utilisation"] = None if utilisation is None else round(utilisation, 3)
        return data


def wrk_version() -> str:
    result = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    return (result.stdout or result.stderr).strip().splitlines()[0]


def run_wrk(
    url_base: str,
    mode: str,
    *,
    duration: float,
    connections: int,
    threads: int,
    cpus: list[int] | None,
    run_tag: str = "run",
    hit_path: str = "/items/42?q=hot",
    miss_prefix: str = "/items/42?q=",
    server_pid: int | None = None,
) -> WrkResult:
    """Run wrk for ``duration`` seconds in ``mode`` "hit" (one URL) or "miss" (unique queries).

    With ``server_pid``, the CPU time that process (and its descendants) used between just
    before wrk starts and just after it exits is recorded with the wall time between the two
    readings (``cpu_seconds``).
    """
    seconds = max(1, round(duration))
    command = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--timeout",
        "5s",
    ]
    if mode == "hit":
        command += ["-s", str(WRK_DIR / "hit.lua"), url_base + hit_path]
    elif mode == "miss":
        command += [
            "-s",
            str(WRK_DIR / "miss.lua"),
            url_base + "/",
            "--",
            miss_prefix,
            run_tag,
        ]
    else:  # pragma: no cover
        raise ValueError(mode)
    cpu0 = cpu_seconds(server_pid) if server_pid is not None else 0.0
    wall0 = time.monotonic()
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        preexec_fn=_affinity(cpus),
    )
    wall = time.monotonic() - wall0
    cpu = cpu_seconds(server_pid) - cpu0 if server_pid is not None else None
    for line in result.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            data = json.loads(line[len("BENCHJSON ") :])
            break
    else:
        raise RuntimeError(
            f"wrk printed no summary (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    secs = data["duration_us"] / 1e6
    lat = data["latency_us"]
    return WrkResult(
        requests=data["requests"],
        seconds=secs,
        rps=data["requests"] / secs if secs else 0.0,
        mean_ms=lat["mean"] / 1000,
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        p99_9_ms=lat["p99_9"] / 1000,
        max_ms=lat["max"] / 1000,
        errors=data["errors"],
        bytes=data["bytes"],
        server_cpu_s=cpu,
        server_wall_s=wall if cpu is not None else None,
    )
