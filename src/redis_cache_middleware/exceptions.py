"""Exceptions raised by redis-cache-middleware.

Hierarchy::

    CacheError
     └── ConfigError (also a ValueError): an option was given a value it cannot take.

Redis failures inside the middleware never surface as exceptions: the middleware fails open.
They do surface from the explicit admin calls on ``RedisCache`` (``purge_url`` and friends),
as the ``redis.exceptions.RedisError`` the client raised.
"""

from __future__ import annotations


class CacheError(Exception):
    """Base class of every error this package raises itself."""


class ConfigError(CacheError, ValueError):
    """An option was given a value it cannot take; the message names the option."""
