"""An example FastAPI service using redis-cache-middleware.

Two kinds of endpoint that gain from a shared cache: stock quotes fetched from a slow,
rate-limited upstream, and a small users CRUD API whose reads far outnumber its writes.

Run it with ``python -m example_app`` (set ``REDIS_URL`` to use a real Redis).
"""

from __future__ import annotations

from .app import cache_from_env, create_app

__all__ = ["cache_from_env", "create_app"]
