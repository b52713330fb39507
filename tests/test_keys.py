"""Tables for ``keys``: query and host normalisation, the hashes, and the key layout."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis.crc import key_slot
from starlette.datastructures import URL

from redis_cache_middleware.keys import (
    MAX_INDEXED_PATH,
    NAMESPACE_RE,
    generation_key,
    hosts_key,
    make_query_filter,
    normalise_host,
    normalise_query,
    path_member,
    prefix_keys,
    prefix_ranges,
    tag_key,
    url_hash,
    url_key,
    variant_hash,
    variant_key,
    variants_key,
)

HASH_LENGTH = 32
BIG = 100 * 1024


def hash_tag(key: str) -> str:
    """Return the part of a key Redis Cluster hashes: between the first ``{`` and next ``}``."""
    start = key.index("{")
    return key[start + 1 : key.index("}", start + 1)]


# -- normalise_query ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "query_string",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"a=1", id="one"),
        pytest.param(b"b=2&a=1", id="order-kept"),
        pytest.param(b"q=a+b", id="plus-kept"),
        pytest.param(b"q=a%20b", id="escape-kept"),
        pytest.param(b'x="><script>', id="raw-markup-kept"),
        pytest.param(b"q=\xe9", id="raw-byte-kept"),
        pytest.param(b"&&a=1&&", id="empty-pairs-kept"),
    ],
)
def test_normalise_query_keeps_the_raw_bytes(query_string: bytes) -> None:
    assert normalise_query(query_string) == query_string


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(b"x=%22%3E%3Cscript%3E", b'x="><script>', id="escaped-vs-raw-markup"),
        pytest.param(b"a=1&b=2", b"b=2&a=1", id="order-of-names"),
        pytest.param(b"a", b"a=", id="bare-name-vs-empty-value"),
        pytest.param(b"q=a+b", b"q=a%20b", id="plus-vs-percent-20"),
        pytest.param(b"q=%41", b"q=A", id="percent-encoded-letter"),
        pytest.param(b"a=1&a=2", b"a=2&a=1", id="repeat-order"),
        pytest.param(b"a=1%262", b"a=1&2", id="encoded-ampersand"),
        pytest.param(b"q=a%2Bb", b"q=a+b", id="encoded-plus"),
        pytest.param(b"a", b"", id="bare-name-vs-nothing"),
        pytest.param(b"a=1", b"A=1", id="name-case"),
    ],
)
def test_normalise_query_different(first: bytes, second: bytes) -> None:
    # The app can tell each pair apart (request.url keeps the raw query): two keys.
    assert normalise_query(first) != normalise_query(second)
    assert str(URL(f"http://h/p?{first.decode('latin-1')}")) != str(
        URL(f"http://h/p?{second.decode('latin-1')}")
    )


@pytest.mark.parametrize(
    ("patterns", "query_string", "expected"),
    [
        pytest.param(
            ["utm_*"],
            b"utm_source=x&a=1&utm_medium=y&utm=3",
            b"a=1&utm=3",
            id="glob-star",
        ),
        pytest.param(
            ["fbclid"],
            b"fbclid=1&fbclid2=2&fb=3",
            b"fbclid2=2&fb=3",
            id="exact-name-only",
        ),
        pytest.param(["v?"], b"v1=a&v10=b&v=c", b"v10=b&v=c", id="glob-question"),
        pytest.param(["[ab]"], b"a=1&b=2&c=3&ab=4", b"c=3&ab=4", id="glob-class"),
        pytest.param(
            ["utm_*", "gclid"],
            b"gclid=1&utm_x=2&keep=%22",
            b"keep=%22",
            id="exact-and-glob-others-raw",
        ),
        pytest.param(["UTM_*"], b"utm_x=1", b"utm_x=1", id="case-sensitive"),
        pytest.param(["*"], b"a=1&b=2", b"", id="everything"),
    ],
)
def test_normalise_query_ignored(patterns: list[str], query_string: bytes, expected: bytes) -> None:
    assert normalise_query(query_string, make_query_filter(patterns)) == expected


def test_normalise_query_ignored_matches_decoded_name() -> None:
    # Starlette decodes the name: an escaped spelling of an ignored name is ignored too.
    ignored = make_query_filter(["utm_source"])
    assert normalise_query(b"utm%5Fsource=1&a=2", ignored) == b"a=2"
    assert normalise_query(b"utm_source=1&a=2", ignored) == b"a=2"


def test_make_query_filter_empty_is_none() -> None:
    assert make_query_filter([]) is None


def test_make_query_filter_predicate() -> None:
    ignored = make_query_filter(["utm_*", "ref"])
    assert ignored is not None
    assert ignored("utm_campaign")
    assert ignored("ref")
    assert not ignored("referrer")
    assert not ignored("xutm_a")


# -- normalise_host -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "scheme", "expected"),
    [
        pytest.param(b"Example.COM", "http", b"example.com", id="lowercase"),
        pytest.param(b" example.com ", "http", b"example.com", id="stripped"),
        pytest.param(b"example.com:80", "http", b"example.com", id="http-80-dropped"),
        pytest.param(b"example.com:443", "https", b"example.com", id="https-443-dropped"),
        pytest.param(b"example.com:80", "ws", b"example.com", id="ws-80-dropped"),
        pytest.param(b"example.com:443", "wss", b"example.com", id="wss-443-dropped"),
        pytest.param(b"example.com:443", "http", b"example.com:443", id="http-443-kept"),
        pytest.param(b"example.com:80", "https", b"example.com:80", id="https-80-kept"),
        pytest.param(b"example.com:8080", "http", b"example.com:8080", id="other-port-kept"),
        pytest.param(b"example.com:8443", "https", b"example.com:8443", id="port-suffix-443"),
        pytest.param(b"example.com:180", "http", b"example.com:180", id="port-suffix-80"),
        pytest.param(b"EXAMPLE.com:80", "http", b"example.com", id="case-and-port"),
        pytest.param(b"[::1]:80", "http", b"[::1]", id="ipv6-port-dropped"),
        pytest.param(b"[::1]:8080", "http", b"[::1]:8080", id="ipv6-port-kept"),
        pytest.param(b"example.com", "ftp", b"example.com", id="unknown-scheme"),
        pytest.param(b"example.com:80", "ftp", b"example.com:80", id="unknown-scheme-port"),
        pytest.param(b"", "http", b"", id="empty"),
    ],
)
def test_normalise_host(host: bytes, scheme: str, expected: bytes) -> None:
    assert normalise_host(host, scheme) == expected


# -- url_hash -----------------------------------------------------------------------------

BASE = ("GET", "https", b"example.com", "/items/1", b"a=1&b=2")


def test_url_hash_is_stable_across_processes() -> None:
    # Pinned: every worker and host must compute the same key for the same URL. A change
    # here orphans every stored entry, so it must be deliberate.
    assert url_hash(*BASE) == "8a9f56cf37422096c7e3b5d67c0dbe77"


def test_url_hash_is_short_hex() -> None:
    value = url_hash("GET", "http", b"h" * BIG, "/" + "p" * BIG, b"q=" + b"v" * BIG)
    assert len(value) == HASH_LENGTH
    assert int(value, 16) >= 0


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(("POST", *BASE[1:]), id="method-class"),
        pytest.param((BASE[0], "http", *BASE[2:]), id="scheme"),
        pytest.param((*BASE[:2], b"example.org", *BASE[3:]), id="host"),
        pytest.param((*BASE[:2], b"example.com:8443", *BASE[3:]), id="host-port"),
        pytest.param((*BASE[:3], "/items/2", BASE[4]), id="path"),
        pytest.param((*BASE[:3], "/items/1/", BASE[4]), id="path-trailing-slash"),
        pytest.param((*BASE[:4], b"a=1&b=3"), id="query-value"),
        pytest.param((*BASE[:4], b"a=1&c=2"), id="query-name"),
        pytest.param((*BASE[:4], b"a=1"), id="query-fewer"),
        pytest.param((*BASE[:4], b""), id="query-empty"),
        pytest.param((*BASE[:4], b"b=2&a=1"), id="query-order"),
        pytest.param((*BASE[:4], b"a=%31&b=2"), id="query-escaped"),
    ],
)
def test_url_hash_differs_per_component(
    changed: tuple[str, str, bytes, str, bytes],
) -> None:
    assert url_hash(*changed) != url_hash(*BASE)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(
            ("GET", "http", b"h", "/a", b"b=c"),
            ("GET", "http", b"h", "/a?b=c", b""),
            id="query-in-path",
        ),
        pytest.param(
            ("GET", "http", b"a:b", "/c", b""),
            ("GET", "http", b"a", ":b/c", b""),
            id="host-colon-vs-path",
        ),
        pytest.param(
            ("GET", "http", b"a/", "b", b""),
            ("GET", "http", b"a", "/b", b""),
            id="host-slash-vs-path",
        ),
        pytest.param(
            ("GET", "https", b"x", "/", b""),
            ("GET", "http", b"sx", "/", b""),
            id="scheme-vs-host",
        ),
        pytest.param(
            ("GET", "http", b"h", "/a", b"?"),
            ("GET", "http", b"h", "/a?", b""),
            id="question-mark-in-query-or-path",
        ),
        pytest.param(
            ("GET", "http", b"h", "/", b"a=1&b=2"),
            ("GET", "http", b"h", "/", b"a=1%26b=2"),
            id="ampersand-escaped-or-not",
        ),
        pytest.param(
            ("GET", "http", b"h", "/", b"a="),
            ("GET", "http", b"h", "/", b""),
            id="blank-param-vs-none",
        ),
        pytest.param(
            ("GET", "http", b"h", "/", b"=a"),
            ("GET", "http", b"h", "/", b"a="),
            id="name-vs-value",
        ),
        pytest.param(
            ("GE", "Thttp", b"h", "/", b""),
            ("GET", "http", b"h", "/", b""),
            id="method-vs-scheme",
        ),
        pytest.param(
            ("GET", "http", b"h\x00", "/", b""),
            ("GET", "http", b"h", "\x00/", b""),
            id="nul-bytes",
        ),
    ],
)
def test_url_hash_no_ambiguity(
    first: tuple[str, str, bytes, str, bytes],
    second: tuple[str, str, bytes, str, bytes],
) -> None:
    assert url_hash(*first) != url_hash(*second)


# -- variant_hash -------------------------------------------------------------------------


def test_variant_hash_is_stable_across_processes() -> None:
    assert variant_hash(["accept"], [b"text/html"]) == "f66827291086b28366f57cb9feffbfd7"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param((["accept"], [None]), (["accept"], [b""]), id="absent-vs-empty"),
        pytest.param((["a"], [b"x"]), (["b"], [b"x"]), id="same-value-other-name"),
        pytest.param((["a", "b"], [b"x", b"y"]), (["ab"], [b"xy"]), id="split-vs-joined"),
        pytest.param((["a", "b"], [b"x", b"y"]), (["a", "b"], [b"y", b"x"]), id="values-swapped"),
        pytest.param((["a", "b"], [b"x", None]), (["a", "b"], [None, b"x"]), id="absent-moved"),
        pytest.param((["a"], [b"x,y"]), (["a", "a"], [b"x", b"y"]), id="comma-vs-two"),
        pytest.param(([], b""), (["a"], [None]), id="none-vs-one-absent"),
        pytest.param((["a"], [b"x"]), (["a", "b"], [b"x", None]), id="extra-absent-name"),
        pytest.param((["a"], [b"None"]), (["a"], [None]), id="literal-none"),
        pytest.param((["a"], [b"X"]), (["a"], [b"x"]), id="value-case"),
    ],
)
def test_variant_hash_differs(
    first: tuple[list[str], list[bytes | None]],
    second: tuple[list[str], list[bytes | None]],
) -> None:
    assert variant_hash(*first) != variant_hash(*second)


def test_variant_hash_equal_for_equal_inputs() -> None:
    assert variant_hash(("accept", "cookie"), (b"a", None)) == variant_hash(
        ["accept", "cookie"], [b"a", None]
    )


def test_variant_hash_bounded() -> None:
    assert len(variant_hash(["x" * BIG], [b"v" * BIG])) == HASH_LENGTH


# -- key layout ---------------------------------------------------------------------------

NAMESPACE = "shop.v2-eu_1"


def key_builders(uhash: str) -> list[str]:
    """Return every key the layout derives from one URL hash."""
    base = url_key(NAMESPACE, 7, uhash)
    vhash = variant_hash(["accept"], [b"text/html"])
    return [base, variant_key(base, vhash), variants_key(base)]


def test_keys_layout() -> None:
    uhash = url_hash(*BASE)
    vhash = variant_hash(["accept"], [b"text/html"])
    base = url_key(NAMESPACE, 7, uhash)
    assert base == f"{NAMESPACE}:7:{{{uhash}}}"
    assert variant_key(base, vhash) == f"{NAMESPACE}:7:{{{uhash}}}:v:{vhash}"
    assert variants_key(base) == f"{NAMESPACE}:7:{{{uhash}}}:vs"
    assert generation_key(NAMESPACE) == f"{NAMESPACE}:gen"


def test_keys_hash_tag_is_url_hash() -> None:
    uhash = url_hash(*BASE)
    for key in key_builders(uhash):
        assert key.startswith(f"{NAMESPACE}:")
        assert hash_tag(key) == uhash


def test_keys_of_one_url_share_cluster_slot() -> None:
    uhash = url_hash(*BASE)
    slots = {key_slot(key.encode()) for key in key_builders(uhash)}
    assert slots == {key_slot(uhash.encode())}


def test_keys_generation_changes_url_key() -> None:
    uhash = url_hash(*BASE)
    assert url_key(NAMESPACE, 1, uhash) != url_key(NAMESPACE, 2, uhash)
    assert url_key(NAMESPACE, 1, uhash) != url_key("other", 1, uhash)


@pytest.mark.parametrize(
    "make_hash",
    [
        pytest.param(lambda: url_hash("GET", "https", b"h", "/" + "p" * BIG, b""), id="path"),
        pytest.param(lambda: url_hash("GET", "https", b"h" * BIG, "/", b""), id="host"),
        pytest.param(lambda: url_hash("GET", "https", b"h", "/", b"&q=" * BIG), id="query"),
        pytest.param(
            lambda: url_hash("GET", "https", b"h", "/", b"&".join(b"%d" % i for i in range(BIG))),
            id="many-params",
        ),
    ],
)
def test_keys_bounded_whatever_the_input(make_hash: Callable[[], str]) -> None:
    uhash = make_hash()
    bound = len(url_key("n" * 64, 2**63, "0" * HASH_LENGTH)) + len(":v:") + HASH_LENGTH
    for key in key_builders(uhash):
        assert len(key) <= bound
        assert "pp" not in key and "vv" not in key and "hh" not in key


@pytest.mark.parametrize(
    "namespace",
    ["cache", "a", "n" * 64, "shop.v2-eu_1", "A.B-C_D"],
)
def test_namespace_re_accepts(namespace: str) -> None:
    assert NAMESPACE_RE.match(namespace)


@pytest.mark.parametrize(
    "namespace",
    [
        "",
        "n" * 65,
        "a{b",
        "a}b",
        "a:b",
        "a b",
        "a\nb",
        "caf\u00e9",
        "a/b",
        pytest.param("cache\n", id="trailing-newline"),
    ],
)
def test_namespace_re_rejects(namespace: str) -> None:
    assert not NAMESPACE_RE.match(namespace)


# -- tag and path indexes -----------------------------------------------------------------


def in_ranges(member: bytes, ranges: list[tuple[bytes, bytes]]) -> bool:
    """Return whether ZRANGEBYLEX over these ``[min``/``(max`` ranges returns the member."""
    for low, high in ranges:
        assert low[:1] == b"[" and high[:1] == b"("
        if low[1:] <= member < high[1:]:
            return True
    return False


def test_index_keys_bounded_whatever_the_input() -> None:
    bound = len("n" * 64) + len(":9223372036854775808:p:{}:x") + HASH_LENGTH
    keys_made = [
        tag_key("n" * 64, 2**63, "t" * BIG),
        *prefix_keys("n" * 64, 2**63, b"h" * BIG),
        hosts_key("n" * 64, 2**63),
    ]
    for key in keys_made:
        assert len(key) <= bound
        assert "tt" not in key and "hh" not in key


def test_tag_key_distinct_per_tag_and_generation() -> None:
    made = {
        tag_key(NAMESPACE, 1, "product:1"),
        tag_key(NAMESPACE, 1, "product:2"),
        tag_key(NAMESPACE, 1, "Product:1"),
        tag_key(NAMESPACE, 2, "product:1"),
        tag_key(NAMESPACE, 1, "caf\u00e9"),
        tag_key(NAMESPACE, 1, "\ud800"),  # a lone surrogate must not raise
    }
    assert len(made) == 6
    for key in made:
        assert len(hash_tag(key)) == HASH_LENGTH


def test_prefix_keys_per_host() -> None:
    lex, expiry = prefix_keys(NAMESPACE, 3, b"example.com")
    assert expiry == f"{lex}:x"
    assert hash_tag(lex) == hash_tag(expiry)
    assert prefix_keys(NAMESPACE, 3, b"example.org")[0] != lex


def test_path_member_bounded() -> None:
    uhash = url_hash(*BASE)
    member = path_member("/" + "p" * BIG, uhash)
    assert member.endswith(b"\x00" + uhash.encode())
    assert len(member) == MAX_INDEXED_PATH + 1 + HASH_LENGTH


@pytest.mark.parametrize(
    ("prefix", "path", "covered"),
    [
        pytest.param("/users", "/users", True, id="itself"),
        pytest.param("/users", "/users/1", True, id="below"),
        pytest.param("/users", "/users/1/posts", True, id="deep-below"),
        pytest.param("/users", "/users2", False, id="sibling-with-suffix"),
        pytest.param("/users", "/users.json", False, id="sibling-with-dot"),
        pytest.param("/users", "/user", False, id="shorter"),
        pytest.param("/users", "/Users/1", False, id="case"),
        pytest.param("/users/", "/users/1", True, id="slash-below"),
        pytest.param("/users/", "/users/", True, id="slash-itself"),
        pytest.param("/users/", "/users", False, id="slash-excludes-parent"),
        pytest.param("/users/", "/users0", False, id="slash-next-byte"),
        pytest.param("/", "/anything/at/all", True, id="root"),
        pytest.param("/caf\u00e9", "/caf\u00e9/x", True, id="non-ascii"),
        pytest.param("/caf\u00e9", "/cafe/x", False, id="non-ascii-vs-ascii"),
        pytest.param("/" + "p" * 2000, "/" + "p" * 3000, True, id="truncated-long-paths"),
    ],
)
def test_prefix_ranges(prefix: str, path: str, covered: bool) -> None:
    member = path_member(path, url_hash(*BASE))
    assert in_ranges(member, prefix_ranges(prefix)) is covered


def test_a_path_with_lone_surrogates_gets_a_key_of_its_own() -> None:
    # A raw ASGI path no conforming server sends: keyed, not an error, and never the key of
    # a well-formed path.
    broken = url_hash("GET", "http", b"h", "/a\udc80", b"")
    assert broken == url_hash("GET", "http", b"h", "/a\udc80", b"")
    assert broken != url_hash("GET", "http", b"h", "/a\udc81", b"")
    assert broken != url_hash("GET", "http", b"h", "/a", b"")
    assert broken != url_hash("GET", "http", b"h", "/a\ufffd", b"")


def test_remembered_url_hashes_follow_ignore_query_params() -> None:
    import fakeredis

    from redis_cache_middleware import RedisCache
    from redis_cache_middleware.cache import HASH_MEMORY

    cache = RedisCache(fakeredis.FakeAsyncRedis())
    tracked = cache.url_hash("http", b"h", "/p", b"utm_source=x&a=1")
    plain = cache.url_hash("http", b"h", "/p", b"a=1")
    assert tracked != plain
    assert cache.url_hash("http", b"h", "/p", b"utm_source=x&a=1") == tracked  # remembered
    cache.ignore_query_params(["utm_*"])
    assert cache.url_hash("http", b"h", "/p", b"utm_source=x&a=1") == plain
    # The memory is bounded: it empties when full, and answers stay the same.
    for i in range(HASH_MEMORY + 10):
        cache.url_hash("http", b"h", f"/n{i}", b"")
    assert len(cache._url_keys._hash_memo) <= HASH_MEMORY
    assert cache.url_hash("http", b"h", "/p", b"a=1") == plain
    assert cache.url_hash("https", b"h", "/p", b"a=1") != plain  # the scheme is keyed
    assert cache.url_hash("http", b"h", "/p", b"a=1", "POST") != plain  # and the method


def test_the_shared_packer_is_left_empty_by_a_pack_that_fails() -> None:
    # Keys and entries share one msgpack packer (``_msgpack.packb``). A path with a lone
    # surrogate fails to pack after the items before it were written: nothing of them may
    # reach the next pack, or every key after it would change.
    import hashlib

    import msgpack

    from redis_cache_middleware._msgpack import packb

    items = ["GET", "http", b"h", "/a", b"q=1"]
    expected = msgpack.packb(items, use_bin_type=True)
    with pytest.raises(UnicodeEncodeError):
        packb(["GET", "http", b"h", "/a\udc80", b""])
    assert packb(items) == expected
    url_hash("GET", "http", b"h", "/a\udc80", b"")  # the fallback after the failed pack
    digest = hashlib.blake2b(expected, digest_size=16).hexdigest()
    assert url_hash("GET", "http", b"h", "/a", b"q=1") == digest
