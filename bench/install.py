"""The benchmark's venvs: the pinned core packages, making ``bench/.venv`` (and the venv of each
peer that cannot share it), installing into them, and the install state that says which peers
installed and lets a later run skip the installs until a pin or ``pyproject.toml`` changes.

Standard library only: ``run.py`` uses it before it has a venv to run in.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from variants import OWN_VENV, PEERS

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV = BENCH / ".venv"
RESULTS = BENCH / "results"
INSTALL_STATE = VENV / ".bench-install.json"

# What the venv holds, pinned to versions that install together on Python 3.11.
CORE = [
    f"-e{ROOT}",
    "uvicorn[standard]==0.54.0",  # brings uvloop and httptools
    "fastapi==0.165.0",
    "redis[hiredis]==8.1.0",
    "hiredis==3.5.0",
    "httpx==0.28.1",
    "matplotlib==3.11.2",
    "py-spy==0.4.3",  # bench/profile_hit.py
]


def venv_python() -> Path:
    return VENV / "bin" / "python"


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def _spec_hash() -> str:
    h = hashlib.sha256()
    h.update(json.dumps([CORE, PEERS]).encode())
    h.update((ROOT / "pyproject.toml").read_bytes())
    return h.hexdigest()


def _pip(args: list[str], log: Path, python: Path | None = None) -> tuple[bool, str]:
    command = [
        str(python or venv_python()),
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        *args,
    ]
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(command)}\n")
        f.flush()
        result = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, timeout=900)
    if result.returncode == 0:
        return True, ""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln or "error" in ln.lower()]
    return False, (errors[-1] if errors else lines[-1] if lines else "pip failed")[:300]


def ensure_venv() -> None:
    """Make ``bench/.venv`` and install what the benchmark needs, unless already done."""
    spec = _spec_hash()
    if venv_python().exists() and INSTALL_STATE.exists():
        try:
            if json.loads(INSTALL_STATE.read_text()).get("spec") == spec:
                return
        except (OSError, ValueError):
            pass
    RESULTS.mkdir(parents=True, exist_ok=True)
    log = RESULTS / "install.log"
    log.write_text("")
    if not venv_python().exists():
        print(f"creating {VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
        _pip(["--quiet", "--upgrade", "pip"], log)
    print(
        f"installing the benchmark's packages into bench/.venv (log: {log.relative_to(ROOT)}) ...",
        flush=True,
    )
    ok, why = _pip(["--quiet", *CORE], log)
    if not ok:
        print(f"could not install the core packages: {why}", file=sys.stderr)
        sys.exit(1)
    peers: dict[str, dict[str, object]] = {}
    for name, requirements in PEERS.items():
        own = OWN_VENV.get(name)
        if own is not None:
            if not (own / "bin" / "python").exists():
                subprocess.run([sys.executable, "-m", "venv", str(own)], check=True, timeout=300)
            ok, why = _pip(["--quiet", *requirements], log, python=own / "bin" / "python")
            peers[name] = {
                "installed": ok,
                "reason": why,
                "requirements": requirements,
                "venv": str(own.relative_to(ROOT)),
            }
            print(f"  {name}: {'installed' if ok else 'NOT installed: ' + why}", flush=True)
            continue
        ok, why = _pip(["--quiet", *requirements], log)
        peers[name] = {"installed": ok, "reason": why, "requirements": requirements}
        print(f"  {name}: {'installed' if ok else 'NOT installed: ' + why}", flush=True)
    INSTALL_STATE.write_text(json.dumps({"spec": spec, "peers": peers}, indent=2))


def install_state() -> dict[str, Any]:
    """What ``ensure_venv`` recorded (which peers installed, and why not); {} before it ran."""
    return json.loads(INSTALL_STATE.read_text()) if INSTALL_STATE.exists() else {}
