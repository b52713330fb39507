"""The Redis client of a ``RedisCache``: what ``from_url`` builds for each URL form (redis-py's
own, ``redis+cluster://`` and ``redis+sentinel://``), with which options, and what a client
handed in must be.

It builds and examines clients, and sends no command. It imports no other module of the
cache: ``cache.py`` calls it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .. import keys
from ..exceptions import ConfigError

if TYPE_CHECKING:
    from redis.asyncio.cluster import RedisCluster

    AnyRedis = Redis | RedisCluster
else:
    AnyRedis = Any

#: URL schemes of ``from_url`` that make a cluster client, and a Sentinel-made one.
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")

#: ``RedisCache``'s ``wait_in_place`` by default and at most, in seconds: a loopback Redis
#: answers a lookup within 0.3 ms in 99 % of cases on a busy worker (docs/performance.md).
WAIT_IN_PLACE = 0.0003
WAIT_IN_PLACE_MAX = 0.005


def client_for_url(
    url: str,
    socket_timeout: float | None,
    connect_timeout: float,
    max_connections: int | None,
    client_options: dict[str, Any],
) -> tuple[AnyRedis, list[Any]]:
    """Return the client ``RedisCache.from_url`` makes for ``url`` (see there), and the
    other clients to close with it (a Sentinel's own); ``ConfigError`` for a bad option or a
    malformed URL.

    Besides every redis-py URL (``redis://``, ``rediss://``, ``unix://``):

    - ``redis+cluster://[user:password@]host:port[,host:port...][/]`` (``rediss+cluster``
      for TLS) makes a ``redis.asyncio.cluster.RedisCluster`` with these startup nodes
      (the port defaults to 6379; one live node is enough, it tells the others).
    - ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``
      (``rediss+sentinel`` for TLS to the master) asks these sentinels for the master
      of ``service`` and follows it through failovers
      (``redis.asyncio.sentinel.Sentinel(...).master_for(service)``). The user and
      password are the master's; a ``sentinel_kwargs={...}`` client option is passed to
      ``Sentinel`` for the sentinels' own connections (e.g. their password).

    These two forms take no query string (give options as keywords).
    """
    for name, value in (
        ("socket_timeout", socket_timeout),
        ("connect_timeout", connect_timeout),
    ):
        if value is None and name == "socket_timeout":
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ConfigError(f"{name} must be a positive number of seconds; got {value!r}")
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(NoBackoff(), 1),
        "socket_keepalive": True,
        "health_check_interval": 30,
    }
    if max_connections is not None:
        options["max_connections"] = max_connections
    options.update(client_options)
    options["decode_responses"] = False
    scheme = url.partition("://")[0].lower() if isinstance(url, str) else ""
    also_close: list[Any] = []
    try:
        if scheme in CLUSTER_SCHEMES:
            client: AnyRedis = _cluster_client(url, options)
        elif scheme in SENTINEL_SCHEMES:
            client, also_close = _sentinel_client(url, options)
        else:
            client = Redis.from_url(url, **options)
    except ValueError as exc:
        raise ConfigError(f"url: {exc}") from exc
    return client, also_close


def _split_hosts(url: str) -> tuple[list[tuple[str, int]], str | None, str | None, str, bool]:
    """Parse ``scheme://[user:password@]host:port[,host:port...][/path]``.

    Returns the hosts, user, password, path and whether TLS was asked for; raises
    ``ValueError`` saying what is wrong.
    """
    from urllib.parse import unquote

    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"expected scheme://host:port, got {url!r}")
    if "?" in rest or "#" in rest:
        raise ValueError(
            f"{scheme}:// URLs take no query string or fragment; pass options as keywords"
        )
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    user: str | None = None
    password: str | None = None
    if at:
        name, colon, secret = userinfo.partition(":")
        user = unquote(name) or None
        password = unquote(secret) if colon else None
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        item = item.strip()
        if item.startswith("["):  # [IPv6]:port
            host, close, tail = item[1:].partition("]")
            if not close:
                raise ValueError(f"unclosed '[' in host {item!r}")
            port_text = tail[1:] if tail.startswith(":") else tail
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise ValueError(f"empty host in {url!r}")
        try:
            port = int(port_text) if port_text else 6379
        except ValueError:
            raise ValueError(f"bad port {port_text!r} for host {host!r}") from None
        if not 0 < port < 65536:
            raise ValueError(f"port {port} of host {host!r} is out of range")
        hosts.append((host, port))
    return hosts, user, password, path if slash else "", scheme.lower().startswith("rediss")


def _cluster_client(url: str, options: dict[str, Any]) -> AnyRedis:
    """Build a ``RedisCluster`` from a ``redis+cluster://`` URL (see ``from_url``)."""
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    hosts, user, password, path, tls = _split_hosts(url)
    if path.strip("/") not in ("", "0"):
        raise ValueError(f"a cluster has only database 0, got path /{path}")
    kwargs = dict(options)
    if user is not None:
        kwargs.setdefault("username", user)
    if password is not None:
        kwargs.setdefault("password", password)
    if tls:
        kwargs.setdefault("ssl", True)
    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in hosts], **kwargs)


def _sentinel_client(url: str, options: dict[str, Any]) -> tuple[AnyRedis, list[Any]]:
    """Build a master client from a ``redis+sentinel://`` URL (see ``from_url``); also
    return the sentinel clients, which the cache closes with it."""
    from redis.asyncio.sentinel import Sentinel

    hosts, user, password, path, tls = _split_hosts(url)
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise ValueError(f"expected /service_name[/db] after the sentinels, got /{path}")
    service = parts[0]
    db = 0
    if len(parts) == 2:
        try:
            db = int(parts[1])
        except ValueError:
            raise ValueError(f"bad database number {parts[1]!r}") from None
    kwargs = dict(options)
    sentinel_kwargs = kwargs.pop("sentinel_kwargs", None) or {
        key: kwargs[key]
        for key in ("socket_timeout", "socket_connect_timeout", "retry")
        if key in kwargs
    }
    kwargs["db"] = db
    if user is not None:
        kwargs.setdefault("username", user)
    if password is not None:
        kwargs.setdefault("password", password)
    if tls:
        kwargs.setdefault("ssl", True)
    sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, **kwargs)  # type: ignore[no-untyped-call,unused-ignore]
    return sentinel.master_for(service, redis_class=Redis), list(sentinel.sentinels)


def is_cluster(client: Any) -> bool:
    """Return whether ``client`` is a ``RedisCluster``."""
    try:
        from redis.asyncio.cluster import RedisCluster
    except ImportError:  # pragma: no cover - every supported redis-py has it
        return False
    return isinstance(client, RedisCluster)


def decodes_responses(client: Any) -> bool:
    """Return whether ``client`` was made with ``decode_responses=True`` (which we refuse)."""
    getter = getattr(client, "get_connection_kwargs", None)
    if callable(getter):
        try:
            return bool(getter().get("decode_responses", False))
        except Exception:  # pragma: no cover - unusual clients
            return False
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", {})
    return bool(kwargs.get("decode_responses", False))


def check_options(
    client: Any,
    namespace: str,
    admin_timeout: float | None,
    generation_check_interval: float,
    multiplex: bool,
    wait_in_place: float = 0.0,
) -> None:
    """Raise ``ConfigError`` for a ``RedisCache`` option that is not right."""
    if not isinstance(namespace, str) or not keys.NAMESPACE_RE.match(namespace):
        raise ConfigError(
            f"namespace must be 1-64 letters, digits, '_', '.' or '-'; got {namespace!r}"
        )
    if decodes_responses(client):
        raise ConfigError(
            "client: the Redis client must be made with decode_responses=False (bodies are bytes)"
        )
    if admin_timeout is not None and (
        isinstance(admin_timeout, bool)
        or not isinstance(admin_timeout, (int, float))
        or not 0 < admin_timeout < float("inf")
    ):
        raise ConfigError(
            f"admin_timeout must be a positive number of seconds or None; got {admin_timeout!r}"
        )
    if (
        isinstance(generation_check_interval, bool)
        or not isinstance(generation_check_interval, (int, float))
        or not 0 <= generation_check_interval < float("inf")
    ):
        raise ConfigError(
            "generation_check_interval must be a number of seconds >= 0; "
            f"got {generation_check_interval!r}"
        )
    if not isinstance(multiplex, bool):
        raise ConfigError(f"multiplex must be True or False; got {multiplex!r}")
    if (
        isinstance(wait_in_place, bool)
        or not isinstance(wait_in_place, (int, float))
        or not 0 <= wait_in_place <= WAIT_IN_PLACE_MAX
    ):
        raise ConfigError(
            f"wait_in_place must be a number of seconds from 0 to {WAIT_IN_PLACE_MAX}; "
            f"got {wait_in_place!r}"
        )
