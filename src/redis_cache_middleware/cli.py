"""``redis-cache``: purge, inspect and size a cache from the command line.

::

    redis-cache [--redis-url URL] [--namespace NS] [--json] purge --url URL [--url URL ...]
    redis-cache purge --tag product-1 --tag product-2
    redis-cache purge --prefix /products [--host shop.example]
    redis-cache purge --prefix https://shop.example/products
    redis-cache purge --url https://shop.example/ --tag products --prefix /search
    redis-cache purge --all
    redis-cache --host-alias localhost:8000=127.0.0.1:8000 purge --url http://localhost:8000/
    redis-cache inspect https://shop.example/products/1
    redis-cache stats [--sample N]

Also ``python -m redis_cache_middleware``. ``--redis-url`` defaults to ``$REDIS_URL``, else
``redis://localhost:6379/0``. ``--json`` prints one JSON document per command. ``--url``,
``--tag`` and ``--prefix`` combine in one purge; ``--all`` goes alone. ``--host`` is a host as
typed: ``127.0.0.1`` (every port of it) or ``127.0.0.1:8000`` (that port).
``--host-alias SPELLING=HOST`` declares the app's ``host_aliases`` to this command.

Exit status: 0 done; 2 bad arguments, a malformed URL, or a Redis that cannot be reached
(``error: cannot reach Redis at <url>: <reason>`` on stderr); 1 any other failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .cache import EntryInfo, NamespaceStats, RedisCache
from .exceptions import ConfigError
from .keys import HOST_RE, NAMESPACE_RE, host_alias_table, split_port
from .purge import BadRequest, check_prefix, check_url

DEFAULT_REDIS_URL = "redis://localhost:6379/0"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Arguments that parse but make no sense together, or a malformed value: exit 2."""


@dataclass(frozen=True)
class Output:
    """Where and how a command prints."""

    as_json: bool
    out: TextIO

    def json(self, document: object) -> None:
        print(json.dumps(document, indent=2, sort_keys=False), file=self.out)

    def line(self, text: str = "") -> None:
        print(text, file=self.out)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (global options, then a subcommand)."""
    parser = argparse.ArgumentParser(
        prog="redis-cache",
        description="Purge, inspect and size a redis-cache-middleware cache.",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
        help="Redis URL (default: $REDIS_URL, else %(default)s)",
    )
    parser.add_argument(
        "--namespace", default="cache", help="the cache's namespace (default: %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--host-alias",
        action="append",
        default=[],
        metavar="SPELLING=HOST",
        help="the app's host_aliases: URLs and hosts given as SPELLING mean HOST (repeatable)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    purge = commands.add_parser(
        "purge",
        help="remove entries by URL, tag and path prefix (combined in one call), or all",
        description=(
            "Remove entries: --url, --tag and --prefix may be repeated and combined in one"
            " call (the count is their sum); --all clears the namespace and goes alone."
        ),
    )
    purge.add_argument(
        "--url", action="append", metavar="URL", help="an absolute URL: all its variants"
    )
    purge.add_argument("--tag", action="append", metavar="TAG", help="every entry with the tag")
    purge.add_argument(
        "--prefix",
        action="append",
        metavar="PREFIX",
        help="a path (/users: /users, /users/..., not /users2) or an absolute URL (that host)",
    )
    purge.add_argument("--all", action="store_true", help="clear the whole namespace (alone)")
    purge.add_argument(
        "--host",
        help=(
            "with a path --prefix: only this host's entries; 127.0.0.1 is every port of it,"
            " 127.0.0.1:8000 that port"
        ),
    )

    inspect = commands.add_parser("inspect", help="show what is stored for a URL")
    inspect.add_argument("url", metavar="URL", help="an absolute http(s) URL")

    stats = commands.add_parser(
        "stats",
        help="count the entries and bytes in the namespace",
        description=(
            "Count the namespace's entries in Redis (SCAN on every primary) and estimate their"
            " bytes (MEMORY USAGE of a sample). Traffic counters (hits, misses, stale,"
            " bypass, errors) are per process, never in Redis: read cache.stats.snapshot()"
            " in the app, or the Prometheus collector."
        ),
    )
    stats.add_argument(
        "--sample",
        type=_positive_int,
        default=1000,
        help="measure the size of at most this many entries (default: %(default)s)",
    )
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        _check(args)
    except UsageError as exc:
        try:
            parser.error(str(exc))  # prints the usage and "redis-cache: error: ...", exits 2
        except SystemExit:
            return EXIT_USAGE
    return asyncio.run(_run(args, Output(as_json=args.json, out=sys.stdout)))


def _check(args: argparse.Namespace) -> None:
    """Check what argparse cannot: what to purge, URL and host shapes, --host only with path
    prefixes, the host aliases."""
    try:
        aliases(args.host_alias)
        if args.command == "purge":
            given = [f"--{n}" for n in ("url", "tag", "prefix") if getattr(args, n)]
            if args.all and given:
                raise UsageError(f"--all: clears everything, so it goes alone, not with {given[0]}")
            if not args.all and not given:
                raise UsageError("purge: give --url, --tag or --prefix (they combine), or --all")
            for url in args.url or ():
                check_url(url, "--url")
            prefixes = [check_prefix(p, "--prefix") for p in args.prefix or ()]
            if args.host is not None:
                if not prefixes:
                    raise UsageError("--host: only goes with --prefix")
                if any(host is not None for _, host in prefixes):
                    raise UsageError("--host: only goes with path prefixes, not URLs")
                host_arg(args.host)
            for tag in args.tag or ():
                if not tag:
                    raise UsageError("--tag: a tag cannot be empty")
        elif args.command == "inspect":
            check_url(args.url, "URL")
    except BadRequest as exc:
        raise UsageError(str(exc)) from None


def host_arg(text: str) -> str:
    """Return ``--host`` as ``RedisCache.purge_prefix`` takes it: a host without a port is
    every port of it (``127.0.0.1`` -> ``127.0.0.1:*``); ``UsageError`` if it is no host."""
    host = text.strip().lower().removesuffix("/")
    if not HOST_RE.match(host.removesuffix(":*")):
        raise UsageError(
            f"--host: expected a host, such as 127.0.0.1 (every port) or 127.0.0.1:8000, "
            f"got {text!r}"
        )
    if host.endswith(":*") or split_port(host.encode())[1] is not None:
        return host
    return f"{host}:*"


def aliases(values: Sequence[str]) -> dict[str, str]:
    """Return the ``--host-alias SPELLING=HOST`` values as a mapping, checked as the
    middleware checks ``host_aliases``; ``UsageError`` naming the option."""
    mapping: dict[str, str] = {}
    for value in values:
        spelling, equals, host = value.partition("=")
        if not equals:
            raise UsageError(f"--host-alias: expected SPELLING=HOST, got {value!r}")
        if mapping.setdefault(spelling, host) != host:
            raise UsageError(f"--host-alias: {spelling!r} is given two hosts")
    try:
        host_alias_table(mapping, "--host-alias")
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    return mapping


async def _run(args: argparse.Namespace, output: Output) -> int:
    shown_url = redact(args.redis_url)
    if not NAMESPACE_RE.match(args.namespace):
        print(
            f"error: --namespace: 1-64 letters, digits, '_', '.' or '-'; got {args.namespace!r}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        # A command line can afford a socket timeout on every command.
        cache = RedisCache.from_url(args.redis_url, namespace=args.namespace, socket_timeout=2.0)
    except ConfigError as exc:
        print(
            f"error: --redis-url: malformed URL {shown_url!r}: {str(exc).removeprefix('url: ')}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        cache.alias_hosts(aliases(args.host_alias))
        if args.command == "purge":
            await _purge(cache, args, output)
        elif args.command == "inspect":
            _show_entries(args.url, await cache.inspect_url(args.url), output)
        else:
            _show_stats(cache.namespace, await cache.scan_stats(sample=args.sample), output)
    except (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError) as exc:
        print(f"error: cannot reach Redis at {shown_url}: {_reason(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except RedisError as exc:
        print(f"error: Redis at {shown_url} answered: {_reason(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as exc:  # pragma: no cover - arguments are checked before
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        with contextlib.suppress(RedisError, OSError):
            await cache.aclose()
    return EXIT_OK


async def _purge(cache: RedisCache, args: argparse.Namespace, output: Output) -> None:
    if args.all:
        await cache.clear()
        if output.as_json:
            output.json({"purged": 0, "cleared": True, "namespace": cache.namespace})
        else:
            output.line(f"cleared namespace {cache.namespace!r}")
        return
    purged = 0
    for url in args.url or ():
        purged += await cache.purge_url(url)
    if args.tag:
        purged += await cache.purge_tag(*args.tag)
    for prefix in args.prefix or ():
        path, host = check_prefix(prefix, "--prefix")
        if host is None and args.host is not None:
            host = host_arg(args.host)
        purged += await cache.purge_prefix(path, host=host)
    if output.as_json:
        output.json({"purged": purged})
    else:
        output.line(f"purged {purged} {'entry' if purged == 1 else 'entries'}")


def entry_document(info: EntryInfo) -> dict[str, Any]:
    """Return one stored variant as a JSON-ready dict (``stored_at`` in ISO 8601 UTC)."""
    return {
        "key": info.key,
        "status": info.status,
        "stored_at": iso_utc(info.stored_at),
        "age": round(info.age, 3),
        "ttl_left": None if info.ttl_left is None else round(info.ttl_left, 3),
        "fresh_for": info.fresh_for,
        "stale_for": info.stale_for,
        "tags": list(info.tags),
        "size": info.size,
        "vary": list(info.vary),
        "vary_values": dict(info.vary_values),
    }


def _show_entries(url: str, infos: Sequence[EntryInfo], output: Output) -> None:
    if output.as_json:
        output.json(
            {
                "url": url,
                "cached": bool(infos),
                "variants": [entry_document(i) for i in infos],
            }
        )
        return
    if not infos:
        output.line(f"{url}: not cached")
        return
    count = len(infos)
    output.line(f"{url}: {count} stored variant{'' if count == 1 else 's'}")
    for number, info in enumerate(infos, 1):
        output.line()
        output.line(f"variant {number}")
        rows = [
            ("key", info.key),
            ("status", str(info.status)),
            ("stored at", iso_utc(info.stored_at)),
            ("age", seconds(info.age)),
            (
                "ttl left",
                "none (never expires)" if info.ttl_left is None else seconds(info.ttl_left),
            ),
            ("fresh for", seconds(info.fresh_for)),
            ("stale for", seconds(info.stale_for)),
            ("tags", ", ".join(info.tags) if info.tags else "-"),
            ("size", f"{info.size} bytes"),
            ("vary", _vary_text(info)),
        ]
        for name, value in rows:
            output.line(f"  {name:<10} {value}")


def _vary_text(info: EntryInfo) -> str:
    if not info.vary:
        return "-"
    values = info.vary_values
    parts = []
    for name in info.vary:
        value = values.get(name)
        parts.append(f"{name}: (absent)" if value is None else f"{name}: {value!r}")
    return "; ".join(parts)


def _show_stats(namespace: str, stats: NamespaceStats, output: Output) -> None:
    if output.as_json:
        output.json(
            {
                "namespace": namespace,
                "entries": stats.entries,
                "bytes": stats.bytes,
                "keys_scanned": stats.keys_scanned,
                "sampled": stats.sampled,
            }
        )
        return
    size = f"{stats.bytes} bytes ({human_bytes(stats.bytes)})"
    if stats.sampled:
        size += ", estimated from a sample of the entries"
    # The names of the JSON document's fields, spelt for people.
    rows = [
        ("namespace", namespace),
        ("entries", str(stats.entries)),
        ("bytes", size),
        ("keys scanned", str(stats.keys_scanned)),
    ]
    for name, value in rows:
        output.line(f"{name:<12} {value}")


def iso_utc(timestamp: float) -> str:
    """Return a POSIX timestamp as ISO 8601 UTC, to the second: ``2024-05-01T12:00:00Z``."""
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def seconds(value: float) -> str:
    """Return a duration for people: ``42.5 s``, ``1 h 2 min 3 s``."""
    if value < 60:
        return f"{value:.1f} s"
    whole = int(value)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{minutes} min {secs} s"
    return f"{hours} h {text}" if hours else text


def human_bytes(size: int) -> str:
    """Return a byte count for people: ``512 B``, ``1.5 KiB``, ``3.2 MiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - unreachable


def redact(url: str) -> str:
    """Return a Redis URL with its password replaced by ``***``, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return url


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
