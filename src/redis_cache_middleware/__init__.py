"""redis-cache-middleware: a shared HTTP cache in Redis for any ASGI app.

>>> cache = RedisCache.from_url("redis://localhost:6379/0", namespace="shop")
>>> app.add_middleware(CacheMiddleware, cache=cache, default_ttl=60)
"""

from __future__ import annotations

from .cache import RedisCache
from .config import NEVER, CacheConfig
from .entry import CachedEntry
from .exceptions import CacheError, ConfigError
from .middleware import CacheMiddleware
from .route import CacheHeaders, cache_headers
from .stats import CacheStats

__all__ = [
    "NEVER",
    "CacheConfig",
    "CacheError",
    "CacheHeaders",
    "CacheMiddleware",
    "CacheStats",
    "CachedEntry",
    "ConfigError",
    "RedisCache",
    "cache_headers",
]

__version__ = "0.1.0"
