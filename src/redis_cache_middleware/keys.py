"""Cache keys: pure functions that turn a request into bounded, unambiguous Redis keys.

A URL's key is a hash of its method class (HEAD shares GET's entries), scheme, host (lowercase,
default port dropped, a declared alias replaced by its canonical host: ``host_alias_table``),
path and the query's raw bytes, exactly as the client sent them: never percent-decoded, never
reordered, so that two requests share a key only if the app cannot tell them apart
(Starlette's ``request.url`` and ``request.query_params`` are built from these bytes;
``?x=%22`` and ``?x="`` are different keys). Ignored parameters are dropped from the
raw query by name, and the middleware hands the app that same filtered query. The parts are
encoded with msgpack before hashing, so no two different inputs share an encoding. Only hashes
and the validated namespace reach Redis: no raw user input becomes a key, whatever its length.

Layout (``ns`` namespace, ``g`` generation, ``h`` URL hash, ``vh`` variant hash)::

    {ns}:gen                 generation number; ``clear()`` increments it
    {ns}:{g}:{h}             the entry (no Vary), or the marker listing the Vary names
    {ns}:{g}:{h}:v:{vh}      one variant of a URL whose response varies
    {ns}:{g}:{h}:vs          the set of variant hashes of the URL, for purging them all
    {ns}:{g}:t:{th}          sorted set: entry keys carrying tag ``th``, scored by expiry (ms)
    {ns}:{g}:p:{hh}          sorted set, all scores 0: ``path NUL h`` of host ``hh``, for
                             prefix purges with ZRANGEBYLEX
    {ns}:{g}:p:{hh}:x        sorted set: the same members scored by expiry, for pruning
    {ns}:{g}:hosts           sorted set: the hosts with entries, scored by expiry
    {ns}:{g}:{h}:lock[:{vh}] fill lock (``SET NX PX`` with a random token)
    {ns}:{g}:{h}:lock[:{vh}]:takeover  a waiter took a slow fill over (one per
                             ``coalesce_timeout``)
    {ns}:{g}:{h}:hfp         hit-for-pass: the last response was not storable

``{h}`` is a Redis Cluster hash tag: all keys of one URL live in one slot.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from fnmatch import fnmatchcase
from urllib.parse import unquote_plus

from ._msgpack import packb
from .exceptions import ConfigError

#: Namespaces are plain so that they can never open a hash tag or collide with our separators.
NAMESPACE_RE = re.compile(r"\A[A-Za-z0-9_.\-]{1,64}\Z")

_DEFAULT_PORTS = {"http": b":80", "https": b":443", "ws": b":80", "wss": b":443"}


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def normalise_host(host: bytes, scheme: str) -> bytes:
    """Return the host lowercased, without the scheme's default port."""
    host = host.strip().lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and host.endswith(default):
        host = host[: -len(default)]
    return host


#: A host as an operator writes one: a name or an address (IPv6 in brackets), then maybe a port.
HOST_RE = re.compile(r"\A(?:[a-z0-9._~!$&'()*+,;=%-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?\Z")

#: Host aliases by scheme: a host as ``normalise_host`` gives it -> the canonical host, the
#: same way normalised (``host_alias_table``).
HostAliases = dict[str, dict[bytes, bytes]]

#: The schemes whose requests a cache keys (and so whose host aliases it resolves).
ALIASED_SCHEMES = ("http", "https")


def split_port(host: bytes) -> tuple[bytes, bytes | None]:
    """Return a host's name and its port, None when it names none: ``[::1]:8000`` is
    ``([::1], 8000)``, ``example.com`` is ``(example.com, None)``."""
    if host.startswith(b"["):
        name, _, rest = host.partition(b"]")
        return (name + b"]", rest[1:]) if rest.startswith(b":") else (host, None)
    name, colon, port = host.rpartition(b":")
    if colon and b":" not in name:
        return name, port
    return host, None


def host_alias_table(aliases: object, option: str = "host_aliases") -> HostAliases:
    """Check a mapping of host spellings to the canonical host each one is keyed as, and
    return it by scheme, both sides normalised as keys hold hosts (lowercase, without the
    scheme's default port), or raise ``ConfigError`` naming ``option``.

    ``{"localhost:8000": "127.0.0.1:8000"}`` keys a request for ``localhost:8000`` as one for
    ``127.0.0.1:8000``. Each side is a host name or address with an optional port; a
    canonical host may not be an alias itself, and two spellings of one host (``a.example``
    and ``a.example:80``, for ``http``) may not name two canonical hosts.
    """
    if not isinstance(aliases, Mapping):
        raise ConfigError(
            f"{option} must be a mapping of host -> canonical host "
            f'(e.g. {{"localhost:8000": "127.0.0.1:8000"}}); got {aliases!r}'
        )
    pairs = [(_alias_host(option, s), _alias_host(option, c)) for s, c in aliases.items()]
    table: HostAliases = {}
    for scheme in ALIASED_SCHEMES:
        by_host: dict[bytes, tuple[bytes, str]] = {}
        for spelling, canonical in pairs:
            key = normalise_host(spelling, scheme)
            target = normalise_host(canonical, scheme)
            if key == target:
                continue  # a host mapped to itself: nothing to do
            seen = by_host.get(key)
            if seen is not None and seen[0] != target:
                raise ConfigError(
                    f"{option}: {spelling.decode()!r} and {seen[1]!r} are one host for "
                    f"{scheme} ({key.decode()!r}) mapped to two canonical hosts"
                )
            by_host[key] = (target, spelling.decode())
        for target, spelling_text in by_host.values():
            if target in by_host:
                raise ConfigError(
                    f"{option}: {spelling_text!r} maps to {target.decode()!r}, itself an alias "
                    f"of {by_host[target][0].decode()!r}: map it there directly"
                )
        table[scheme] = {key: target for key, (target, _) in by_host.items()}
    return table


def _alias_host(option: str, value: object) -> bytes:
    """One side of a host alias, lowercased, or ``ConfigError`` naming ``option``."""
    text = value.strip().lower() if isinstance(value, str) else None
    if text is None or not HOST_RE.match(text):
        raise ConfigError(
            f"{option}: {value!r} is not a host (a name or address, maybe with :port, "
            "such as 'localhost:8000')"
        )
    return text.encode("ascii")


def make_query_filter(patterns: Sequence[str]) -> Callable[[str], bool] | None:
    """Return a predicate telling which query parameter names to ignore (glob patterns)."""
    if not patterns:
        return None
    exact = frozenset(p for p in patterns if not any(c in p for c in "*?["))
    globs = tuple(p for p in patterns if p not in exact)

    def ignored(name: str) -> bool:
        return name in exact or any(fnmatchcase(name, g) for g in globs)

    return ignored


def normalise_query(query_string: bytes, ignored: Callable[[str], bool] | None = None) -> bytes:
    """Return the query as keys use it: the raw bytes, less the ignored parameters.

    Nothing is unquoted or reordered: ``?b=1&a=2`` and ``?a=2&b=1`` are two keys, as are
    ``?x=%22`` and ``?x="``, because an app reading ``request.url`` can tell them apart. An
    ignored parameter is recognised by its name as Starlette decodes it (``+`` and ``%XX``
    unquoted), and its raw ``&``-separated pair is dropped, the others kept byte for byte.
    """
    if not query_string or ignored is None:
        return query_string
    kept = [
        pair
        for pair in query_string.split(b"&")
        if not ignored(unquote_plus(pair.partition(b"=")[0].decode("latin-1")))
    ]
    return b"&".join(kept)


def url_hash(
    method_class: str,
    scheme: str,
    host: bytes,
    path: str,
    query: bytes,
) -> str:
    """Return the hash that names a URL's keys."""
    try:
        packed = packb([method_class, scheme, host, path, query])
    except UnicodeEncodeError:
        # Lone surrogates (a raw ASGI path no conforming server sends): keyed by their
        # escaped bytes, in a shape (six items) no well-formed URL packs to.
        packed = packb(
            [
                "surrogates",
                method_class,
                scheme,
                host,
                _escaped(path),
                query,
            ],
        )
    return _digest(packed)


def _escaped(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def variant_hash(names: Sequence[str], values: Sequence[bytes | None]) -> str:
    """Return the hash naming one variant: the varying header names with their values.

    An absent header (None) encodes differently from an empty one, and the names are part of
    the hash, so a variant stored under one Vary list is never found under another.
    """
    return _digest(packb([list(names), list(values)]))


def generation_key(namespace: str) -> str:
    """Return the key holding the namespace's generation number."""
    return f"{namespace}:gen"


def url_key(namespace: str, generation: int, uhash: str) -> str:
    """Return the key of a URL's entry or Vary marker."""
    return f"{namespace}:{generation}:{{{uhash}}}"


def variant_key(base: str, vhash: str) -> str:
    """Return the key of one variant of the URL whose key is ``base``."""
    return f"{base}:v:{vhash}"


def tag_key(namespace: str, generation: int, tag: str) -> str:
    """Return the key of the sorted set indexing the entries that carry a tag."""
    return f"{namespace}:{generation}:t:{{{_digest(tag.encode('utf-8', 'surrogatepass'))}}}"


def prefix_keys(namespace: str, generation: int, host: bytes) -> tuple[str, str]:
    """Return the keys of a host's path index: the lexical set and its expiry companion."""
    lex = f"{namespace}:{generation}:p:{{{_digest(host)}}}"
    return lex, f"{lex}:x"


def hosts_key(namespace: str, generation: int) -> str:
    """Return the key of the sorted set of hosts that have entries."""
    return f"{namespace}:{generation}:hosts"


#: Paths longer than this are indexed by their first this-many bytes for prefix purges.
MAX_INDEXED_PATH = 1024
#: Hosts longer than this (a DNS name has at most 253 bytes, then a port) are not indexed
#: for prefix purges: the set of hosts holds hosts as they are, and none is that long.
MAX_INDEXED_HOST = 262


def path_member(path: str, uhash: str) -> bytes:
    """Return a URL's member in its host's path index: the path, NUL, the URL hash."""
    raw = path.encode("utf-8", "surrogatepass")[:MAX_INDEXED_PATH]
    return raw + b"\x00" + uhash.encode()


def prefix_ranges(prefix: str) -> list[tuple[bytes, bytes]]:
    """Return the ZRANGEBYLEX ranges of the paths under a path-segment prefix.

    ``/users`` covers ``/users`` itself (any query) and ``/users/...``, not ``/users2``;
    ``/users/`` covers what is below it.
    """
    raw = prefix.encode("utf-8", "surrogatepass")[:MAX_INDEXED_PATH]
    if raw.endswith(b"/"):
        return [(b"[" + raw, b"(" + raw[:-1] + b"0")]  # '0' is the byte after '/'
    return [(b"[" + raw + b"\x00", b"(" + raw + b"\x01"), (b"[" + raw + b"/", b"(" + raw + b"0")]


def lock_key(base: str, variant: str = "") -> str:
    """Return the fill lock of a URL (or of one variant, by its hash)."""
    return f"{base}:lock:{variant}" if variant else f"{base}:lock"


def takeover_key(base: str, variant: str = "") -> str:
    """Return the marker of a fill lock's last takeover (at most one per ``coalesce_timeout``),
    beside the lock: same hash tag, same slot."""
    return f"{lock_key(base, variant)}:takeover"


def pass_key(base: str) -> str:
    """Return the hit-for-pass marker of a URL whose last response could not be stored."""
    return f"{base}:hfp"


def variants_key(base: str) -> str:
    """Return the key of the set listing the variants of the URL whose key is ``base``."""
    return f"{base}:vs"
