"""How a cache names a URL: its hash (``keys.url_hash``) over the normalised host (a declared
alias replaced by its canonical host) and the query less the ignored parameters, remembered
for hot URLs, and the same for an absolute URL given to a purge; and which hosts' path
indexes a prefix purge for a host reads.

Pure: it sends no command and imports no other module of the cache. ``RedisCache`` owns
one ``UrlKeys`` and answers ``url_hash``, ``hash_for_url``, ``key_host``, ``app_query``,
``ignore_query_params`` and ``alias_hosts`` with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from urllib.parse import quote, unquote, urlsplit

from .. import keys
from ..exceptions import ConfigError

#: How many URLs' hashes a process keeps, so that a hot URL is hashed once.
HASH_MEMORY = 4096

METHOD_CLASS_GET = "GET"

#: Characters of a query that ``hash_for_url`` keeps as given: every printable ASCII
#: character but the space (``%`` too, so that escapes already there stay as they are).
QUERY_AS_SENT = "".join(chr(c) for c in range(0x21, 0x7F))


class UrlKeys:
    """The URL hashing of a cache, with the query parameters it ignores."""

    def __init__(self) -> None:
        self._ignored_query: list[str] = []
        #: Recent URLs' hashes, by what url_hash was given (emptied when full).
        self._hash_memo: dict[tuple[str, str, bytes, str, bytes], str] = {}
        self._query_filter: Callable[[str], bool] | None = None
        #: The host aliases given so far, lowercased (spelling -> canonical host).
        self._alias_source: dict[str, str] = {}
        #: Those aliases by scheme, normalised (``keys.host_alias_table``); empty: none.
        self._aliases: keys.HostAliases = {}

    def alias_hosts(self, aliases: Mapping[str, str]) -> None:
        """Key requests for each host spelling as requests for its canonical host
        (``keys.host_alias_table``), added to the aliases given before; raise
        ``ConfigError`` naming ``host_aliases`` when a spelling would get two hosts."""
        keys.host_alias_table(aliases)  # checks the mapping alone, naming the bad entry
        merged = dict(self._alias_source)
        for spelling, canonical in aliases.items():
            spelling, canonical = spelling.strip().lower(), canonical.strip().lower()
            if merged.get(spelling, canonical) != canonical:
                raise ConfigError(
                    f"host_aliases: {spelling!r} is already an alias of "
                    f"{merged[spelling]!r} on this cache, not of {canonical!r}"
                )
            merged[spelling] = canonical
        self._aliases = keys.host_alias_table(merged)
        self._alias_source = merged
        self._hash_memo.clear()

    def key_host(self, host: bytes, scheme: str) -> bytes:
        """Return the host as keys hold it: lowercase, without the scheme's default port,
        a declared alias replaced by its canonical host."""
        normalised = keys.normalise_host(host, scheme)
        aliases = self._aliases.get(scheme)
        return aliases.get(normalised, normalised) if aliases else normalised

    def prefix_hosts(self, host: str) -> tuple[list[bytes], bytes | None]:
        """Return the hosts (as keys hold them) whose path indexes a prefix purge for
        ``host`` reads, and a host name whose every port it also reads (None: no other).

        ``example.com:8080`` is that port; ``example.com`` the default ports (of http and
        https); ``example.com:*`` every port, those of the aliases of that name included.
        Each resolves through the host aliases.
        """
        given = host.strip().lower().encode("latin-1", "replace")
        any_port = given.endswith(b":*")
        if any_port:
            given = given[:-2]
        found = [self.key_host(given, scheme) for scheme in keys.ALIASED_SCHEMES]
        if not any_port:
            return list(dict.fromkeys(found)), None
        for table in self._aliases.values():
            found += [c for s, c in table.items() if keys.split_port(s)[0] == given]
        return list(dict.fromkeys(found)), given

    def ignore_query_params(self, patterns: Sequence[str]) -> bool:
        """Drop query parameters matching these glob patterns from every key; return
        whether any parameter is ignored now."""
        for pattern in patterns:
            if pattern not in self._ignored_query:
                self._ignored_query.append(pattern)
        self._query_filter = keys.make_query_filter(self._ignored_query)
        self._hash_memo.clear()
        return self._query_filter is not None

    def app_query(self, query_string: bytes) -> bytes:
        """Return the raw query as keys see it: without the ignored parameters."""
        return keys.normalise_query(query_string, self._query_filter)

    def url_hash(
        self, scheme: str, host: bytes, path: str, query_string: bytes, method: str
    ) -> str:
        """Return the hash naming the keys of a URL, as requested with ``method``.

        The query is keyed by its raw bytes (``keys.normalise_query``): never unquoted.
        """
        method_class = METHOD_CLASS_GET if method in ("GET", "HEAD") else method
        memo_key = (method_class, scheme, host, path, query_string)
        uhash = self._hash_memo.get(memo_key)
        if uhash is None:
            # Hot URLs skip the host normalising and hashing.
            uhash = keys.url_hash(
                method_class,
                scheme,
                self.key_host(host, scheme),
                path,
                keys.normalise_query(query_string, self._query_filter),
            )
            if len(self._hash_memo) >= HASH_MEMORY:
                self._hash_memo.clear()
            self._hash_memo[memo_key] = uhash
        return uhash

    def hash_for_url(self, url: str, method: str = "GET") -> str:
        """Return the hash naming the keys of an absolute URL (``http://host/path?query``).

        The path is compared decoded (as ASGI servers give it); the query byte for byte as
        clients send it, percent-escapes included: ``?q=a%20b`` is not ``?q=a+b``. Spaces and
        non-ASCII characters in the given query are percent-encoded as UTF-8 first, as every
        HTTP client sends them.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url must be absolute http(s), got {url!r}")
        host = parts.netloc.rpartition("@")[2]  # user info is not part of the key
        return self.url_hash(
            parts.scheme,
            host.encode("latin-1", "replace"),
            unquote(parts.path or "/"),
            quote(parts.query, safe=QUERY_AS_SENT).encode("ascii"),
            method.upper(),
        )
