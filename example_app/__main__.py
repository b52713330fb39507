"""Serve the example app: ``python -m example_app [--host HOST] [--port PORT]``.

``REDIS_URL`` (e.g. ``redis://localhost:6379/0``) selects the Redis to cache in; without it an
in-process stand-in is used. ``UPSTREAM_LATENCY`` (seconds, default 0.3) sets how slow the
simulated quotes upstream is.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import uvicorn

from .app import cache_from_env, create_app


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
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Build the cache from the environment, wire the app and serve it."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    cache = cache_from_env()
    app = create_app(cache)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
