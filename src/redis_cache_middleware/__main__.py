"""``python -m redis_cache_middleware``: the ``redis-cache`` command line (see ``cli``)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
