"""Serve the example app: ``python -m example_app [--host HOST] [--port PORT] [--redis-port N]``.

``REDIS_URL`` (e.g. ``redis://localhost:6379/0``) selects the Redis to cache in. Without it
the app serves a fakeredis on ``127.0.0.1:6399`` (``--redis-port``; 0 for any free port) from
its own process, which ``redis-cache`` and ``redis-cli`` reach while the app runs.
``CACHE_PURGE_TOKEN`` sets the token of the purge endpoint and the bypass header (else one is
made up and shown). ``UPSTREAM_LATENCY`` (seconds, default 0.3) sets how slow the simulated
quotes upstream is. At start the app prints its namespace, Redis URL and token, and the
``export`` line that points ``redis-cache`` and the README's tour at them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections.abc import Sequence

import uvicorn

from redis_cache_middleware import RedisCache

from .app import (
    BYPASS_HEADER,
    NAMESPACE,
    PURGE_PATH,
    TOKEN_VARIABLE,
    create_app,
    without_password,
)
from .embedded import DEFAULT_PORT, EmbeddedRedis, PortInUse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the command line options."""
    parser = argparse.ArgumentParser(
        prog="python -m example_app",
        description="Serve the redis-cache-middleware example app with uvicorn.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8000, help="port to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--redis-port",
        type=int,
        default=DEFAULT_PORT,
        help=(
            "loopback port of the fakeredis served when REDIS_URL is unset; 0 for any free"
            " port (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (default: %(default)s)",
    )
    return parser.parse_args(argv)


def banner(*, host: str, port: int, redis_url: str, embedded: bool, token: str | None) -> str:
    """What the app prints at start; ``token`` is None when it came from the environment."""
    where = (
        "fakeredis in this process, on loopback; gone when the app stops"
        if embedded
        else "from REDIS_URL"
    )
    shown = "<the token>" if token is None else token
    origin = (
        f"from {TOKEN_VARIABLE}" if token is None else f"made up; set {TOKEN_VARIABLE} to choose"
    )
    export = without_password(redis_url) if embedded or "@" not in redis_url else "<your REDIS_URL>"
    return "\n".join(
        [
            "redis-cache-middleware example app",
            f"  app         http://{host}:{port}/ (GET / lists the endpoints)",
            f"  namespace   {NAMESPACE}",
            f"  Redis       {without_password(redis_url)} ({where})",
            f"  bypass      {BYPASS_HEADER}: {shown}",
            f"  purge       POST {PURGE_PATH}, or PURGE <url>, with Authorization: Bearer {shown}",
            f"  token       {shown} ({origin})",
            "For redis-cache and curl in another shell:",
            f"  export REDIS_URL={export} TOKEN={shown}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Start the Redis (unless ``REDIS_URL`` names one), wire the app and serve it."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with contextlib.ExitStack() as stack:
        url = os.environ.get("REDIS_URL")
        embedded = not url
        if not url:
            redis = EmbeddedRedis(args.redis_port)
            try:
                url = redis.start()
            except PortInUse as exc:
                raise SystemExit(
                    f"error: the example's Redis cannot listen: {exc}; pass --redis-port 0"
                    " for any free port, or set REDIS_URL"
                ) from None
            stack.callback(redis.stop)
        chosen = os.environ.get(TOKEN_VARIABLE) or None
        # localhost and 127.0.0.1 are one site here: one entry, one purge, one invalidation.
        aliases = {f"localhost:{args.port}": f"127.0.0.1:{args.port}"}
        app = create_app(
            RedisCache.from_url(url, namespace=NAMESPACE), token=chosen, host_aliases=aliases
        )
        token = None if chosen else str(app.state.token)
        print(
            banner(host=args.host, port=args.port, redis_url=url, embedded=embedded, token=token),
            flush=True,
        )
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
