"""The entry codec: round-trips, and ``decode`` reading anything malformed as a miss."""

from __future__ import annotations

import random

import msgpack
import pytest

from redis_cache_middleware.entry import (
    F_AUTH,
    F_BODY,
    F_FRESH_FOR,
    F_HEADERS,
    F_INITIAL_AGE,
    F_STALE_FOR,
    F_STATUS,
    F_STORED_AT,
    F_TAGS,
    F_VARY,
    F_VARY_REQUEST,
    F_VERSION,
    NEVER_STORED,
    REDACTED,
    REDACTED_HEADERS,
    SCHEMA_VERSION,
    CachedEntry,
    VaryMarker,
    decode,
    encode,
    encode_marker,
)

Fields = dict[bytes, bytes]

#: Every field an entry hash must hold.
REQUIRED_FIELDS = [
    F_VERSION,
    F_STATUS,
    F_HEADERS,
    F_BODY,
    F_STORED_AT,
    F_FRESH_FOR,
    F_STALE_FOR,
    F_INITIAL_AGE,
    F_AUTH,
    F_TAGS,
]

BODY = bytes(range(256)) * 4

ENTRY = CachedEntry(
    status=200,
    headers=[
        (b"content-type", b"application/octet-stream"),
        (b"set-cookie", b"a=1"),
        (b"x-binary", b"\t\x80\xff \x7e"),  # HTAB, obs-text, SP, VCHAR: all a value may hold
        (b"set-cookie", b"b=2"),
        (b"content-length", str(len(BODY)).encode()),
    ],
    body=BODY,
    stored_at=1_700_000_000.123456,
    fresh_for=60.5,
    stale_for=30.0,
    initial_age=5.0,
    shared_with_auth=True,
    tags=("product:1", "caf\u00e9", ""),
)


def fields_with(**changes: bytes) -> Fields:
    """Return the encoded ``ENTRY`` with some fields replaced (by name, without ``F_``)."""
    fields = encode(ENTRY)
    for name, value in changes.items():
        fields[name.encode()] = value
    return fields


def fields_without(name: bytes) -> Fields:
    """Return the encoded ``ENTRY`` without one field."""
    fields = encode(ENTRY)
    del fields[name]
    return fields


# -- round-trips --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param(ENTRY, id="everything"),
        pytest.param(
            CachedEntry(status=204, headers=[], body=b"", stored_at=0.0, fresh_for=0.0),
            id="empty",
        ),
        pytest.param(
            CachedEntry(
                status=200,
                headers=[(b"content-length", b"0")],
                body=b"",
                stored_at=1.0,
                fresh_for=1.0,
            ),
            id="empty-body-with-length",
        ),
        pytest.param(
            CachedEntry(
                status=404,
                headers=[(b"x", b"1"), (b"x", b"1"), (b"x", b"2")],
                body=b"not found",
                stored_at=1.5,
                fresh_for=0.1,
            ),
            id="identical-duplicate-headers",
        ),
        pytest.param(
            CachedEntry(
                status=200,
                headers=[(b"b", b""), (b"a", b""), (b"c", b"")],
                body=b"\x00" * 10,
                stored_at=1e10,
                fresh_for=2147483648.0,
                stale_for=1e-06,
                initial_age=0.1 + 0.2,
            ),
            id="awkward-floats-and-empty-headers",
        ),
        pytest.param(
            CachedEntry(
                status=200, headers=[], body=b"", stored_at=0.0, fresh_for=0.0, tags=("t",)
            ),
            id="status-200",
        ),
        pytest.param(
            CachedEntry(status=599, headers=[], body=b"x", stored_at=0.0, fresh_for=0.0),
            id="status-599",
        ),
        pytest.param(
            CachedEntry(
                status=200,
                headers=[],
                body=b"\x93\x01\x02\x03",  # msgpack-looking bytes stay opaque
                stored_at=0.0,
                fresh_for=5.0,
                tags=tuple(f"t{i}" for i in range(100)),
            ),
            id="many-tags",
        ),
    ],
)
def test_encode_decode_round_trip(entry: CachedEntry) -> None:
    assert decode(encode(entry)) == entry


def test_encode_keeps_header_order_and_duplicates() -> None:
    decoded = decode(encode(ENTRY))
    assert isinstance(decoded, CachedEntry)
    assert decoded.headers == ENTRY.headers
    assert [n for n, _ in decoded.headers].count(b"set-cookie") == 2


def test_encode_values_are_readable() -> None:
    fields = encode(ENTRY)
    assert fields[F_VERSION] == SCHEMA_VERSION
    assert fields[F_STATUS] == b"200"
    assert fields[F_BODY] == BODY
    assert float(fields[F_STORED_AT]) == ENTRY.stored_at
    assert fields[F_AUTH] == b"1"
    assert F_VARY not in fields


def test_encode_not_shared_with_auth() -> None:
    entry = CachedEntry(status=200, headers=[], body=b"", stored_at=0.0, fresh_for=1.0)
    assert encode(entry)[F_AUTH] == b"0"
    decoded = decode(encode(entry))
    assert isinstance(decoded, CachedEntry)
    assert decoded.shared_with_auth is False


@pytest.mark.parametrize(
    "names",
    [
        pytest.param(("accept",), id="one"),
        pytest.param(("accept", "accept-encoding", "x-tenant"), id="several"),
        pytest.param((), id="none"),
    ],
)
def test_encode_marker_round_trip(names: tuple[str, ...]) -> None:
    assert decode(encode_marker(VaryMarker(names))) == VaryMarker(names)


def test_encode_marker_holds_no_entry_fields() -> None:
    fields = encode_marker(VaryMarker(("accept",)))
    assert set(fields) == {F_VERSION, F_VARY}


# -- decode: malformed is None ------------------------------------------------------------


def test_decode_empty_is_none() -> None:
    assert decode({}) is None


@pytest.mark.parametrize("version", [b"", b"0", b"2", b"1.0", b" 1", b"v1", b"\x01"])
def test_decode_other_version_is_none(version: bytes) -> None:
    assert decode(fields_with(v=version)) is None


def test_decode_other_version_marker_is_none() -> None:
    fields = encode_marker(VaryMarker(("accept",)))
    fields[F_VERSION] = b"2"
    assert decode(fields) is None


@pytest.mark.parametrize("name", REQUIRED_FIELDS, ids=[f.decode() for f in REQUIRED_FIELDS])
def test_decode_missing_field_is_none(name: bytes) -> None:
    assert decode(fields_without(name)) is None


@pytest.mark.parametrize(
    "status",
    [
        *(b"", b"abc", b"200.0", b"2e2", b"0x10", b"99", b"0", b"1000", b"-200", b"\xff"),
        # Not a final status (RFC 9110 15): a server cannot send it as a response's status.
        *(b"100", b"101", b"199", b"600", b"999"),
    ],
)
def test_decode_bad_status_is_none(status: bytes) -> None:
    assert decode(fields_with(status=status)) is None


@pytest.mark.parametrize(
    "name", [F_STORED_AT, F_FRESH_FOR, F_STALE_FOR, F_INITIAL_AGE], ids=lambda f: f.decode()
)
@pytest.mark.parametrize(
    "value", [b"nan", b"NaN", b"inf", b"-inf", b"1e999", b"", b"abc", b"1,5", b"\x00"]
)
def test_decode_non_finite_number_is_none(name: bytes, value: bytes) -> None:
    fields = encode(ENTRY)
    fields[name] = value
    assert decode(fields) is None


@pytest.mark.parametrize(
    "name", [F_FRESH_FOR, F_STALE_FOR, F_INITIAL_AGE], ids=lambda f: f.decode()
)
@pytest.mark.parametrize("value", [b"-1", b"-0.001", b"-1e300"])
def test_decode_negative_duration_is_none(name: bytes, value: bytes) -> None:
    fields = encode(ENTRY)
    fields[name] = value
    assert decode(fields) is None


def test_decode_zero_durations_accepted() -> None:
    decoded = decode(fields_with(fresh_for=b"0", stale_for=b"0.0", age0=b"-0.0"))
    assert isinstance(decoded, CachedEntry)
    assert (decoded.fresh_for, decoded.stale_for, decoded.initial_age) == (0.0, 0.0, 0.0)


def test_decode_truncated_headers_is_none() -> None:
    packed = encode(ENTRY)[F_HEADERS]
    for cut in range(len(packed)):
        assert decode(fields_with(headers=packed[:cut])) is None, cut


def test_decode_headers_with_trailing_bytes_is_none() -> None:
    packed = encode(ENTRY)[F_HEADERS]
    assert decode(fields_with(headers=packed + b"\x00")) is None


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(msgpack.packb({b"a": b"b"}), id="map"),
        pytest.param(msgpack.packb(None), id="nil"),
        pytest.param(msgpack.packb(1), id="int"),
        pytest.param(msgpack.packb(b"content-type"), id="bytes"),
        pytest.param(msgpack.packb([b"a", b"b"]), id="flat-list"),
        pytest.param(msgpack.packb([[b"a"]]), id="single"),
        pytest.param(msgpack.packb([[b"a", b"b", b"c"]]), id="triple"),
        pytest.param(msgpack.packb([[1, 2]]), id="ints"),
        pytest.param(msgpack.packb([[b"a", None]]), id="nil-value"),
        pytest.param(msgpack.packb([[b"a", [b"b"]]]), id="nested-value"),
        pytest.param(msgpack.packb([[b"a", b"b"], 7]), id="good-then-bad"),
        pytest.param(msgpack.packb([{b"a": b"b"}]), id="map-pair"),
        pytest.param(msgpack.packb([[b"a", 1.5]]), id="float-value"),
        pytest.param(msgpack.packb([[b"a", True]]), id="bool-value"),
        pytest.param(msgpack.packb([[msgpack.ExtType(1, b"x"), b"v"]]), id="ext-name"),
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(b"\x91" * 5000 + b"\xc0", id="deeply-nested"),
        pytest.param(b"\xdd\xff\xff\xff\xff", id="huge-array-length"),
        pytest.param(b"\x81\x90\x01", id="unhashable-map-key"),
    ],
)
def test_decode_headers_not_byte_pairs_is_none(headers: bytes) -> None:
    assert decode(fields_with(headers=headers)) is None


@pytest.mark.parametrize(
    "tags",
    [
        pytest.param(msgpack.packb("tag"), id="str"),
        pytest.param(msgpack.packb([1]), id="int-item"),
        pytest.param(msgpack.packb([b"tag"], use_bin_type=True), id="bytes-item"),
        pytest.param(msgpack.packb({"a": "b"}), id="map"),
        pytest.param(b"\x91\xa1\xff", id="invalid-utf8"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\x92\xa1a", id="truncated"),
    ],
)
def test_decode_bad_tags_is_none(tags: bytes) -> None:
    assert decode(fields_with(tags=tags)) is None


@pytest.mark.parametrize(
    ("content_length", "body"),
    [
        pytest.param(b"5", b"abcd", id="longer"),
        pytest.param(b"3", b"abcd", id="shorter"),
        pytest.param(b"0", b"a", id="zero"),
        pytest.param(b"", b"", id="empty-value"),
        pytest.param(b"four", b"abcd", id="not-a-number"),
        pytest.param(b"+4", b"abcd", id="plus-sign"),
        pytest.param(b"04", b"abcd", id="leading-zero"),
        pytest.param(b"-0", b"", id="minus-zero"),
    ],
)
def test_decode_content_length_disagreeing_is_none(content_length: bytes, body: bytes) -> None:
    headers = msgpack.packb([[b"content-length", content_length]], use_bin_type=True)
    assert decode(fields_with(headers=headers, body=body)) is None


@pytest.mark.parametrize("content_length", [b"4", b" 4", b"4 ", b"\t4\t"])
def test_decode_content_length_agreeing(content_length: bytes) -> None:
    headers = msgpack.packb([[b"content-length", content_length]], use_bin_type=True)
    decoded = decode(fields_with(headers=headers, body=b"abcd"))
    assert isinstance(decoded, CachedEntry)
    assert decoded.body == b"abcd"


@pytest.mark.parametrize("second", [b"9", b"4"])
def test_decode_two_content_lengths_is_none(second: bytes) -> None:
    # Even two that agree: we never store two, and a server refuses to send them.
    headers = msgpack.packb(
        [[b"content-length", b"4"], [b"content-length", second]], use_bin_type=True
    )
    assert decode(fields_with(headers=headers, body=b"abcd")) is None


#: Header lines no server can send as they are (RFC 9110 5.1, 5.5, 7.6.1): the entry is
#: not ours (forged or damaged), and replaying it would break the client's connection.
UNSENDABLE_HEADERS = [
    pytest.param(b"x-a", b"1\r\nset-cookie: s=1", id="crlf-in-value"),
    pytest.param(b"x-a", b"1\r", id="cr-in-value"),
    pytest.param(b"x-a", b"1\n", id="lf-in-value"),
    pytest.param(b"x-a", b"a\x00b", id="nul-in-value"),
    pytest.param(b"x-a", b"\x01", id="soh-in-value"),
    pytest.param(b"x-a", b"\x1f", id="us-in-value"),
    pytest.param(b"x-a", b"a\x7fb", id="del-in-value"),
    pytest.param(b"x a", b"1", id="space-in-name"),
    pytest.param(b"x:a", b"1", id="colon-in-name"),
    pytest.param(b"x-a:", b"1", id="colon-ending-name"),
    pytest.param(b"", b"1", id="empty-name"),
    pytest.param(b"x\ra", b"1", id="cr-in-name"),
    pytest.param(b"x\x00", b"1", id="nul-in-name"),
    pytest.param(b"X-A", b"1", id="uppercase-name"),
    pytest.param(b"x\xe9", b"1", id="non-ascii-name"),
    pytest.param(b"(x)", b"1", id="separator-in-name"),
    *(
        pytest.param(name, b"chunked", id=f"{name.decode()}-stored")
        for name in sorted(NEVER_STORED)
    ),
]


@pytest.mark.parametrize(("name", "value"), UNSENDABLE_HEADERS)
def test_decode_unsendable_header_is_none(name: bytes, value: bytes) -> None:
    headers = [[b"content-type", b"text/plain"], [name, value], [b"x-b", b"2"]]
    fields = fields_with(headers=msgpack.packb(headers, use_bin_type=True))
    assert decode(fields) is None
    # The same line made sendable is read: only the bad byte (or name) is refused.
    headers[1] = [b"x-a", b"1"]
    assert isinstance(decode(fields_with(headers=msgpack.packb(headers))), CachedEntry)


@pytest.mark.parametrize(
    "value",
    [b"", b" padded ", b"\ttabbed\t", b"caf\xe9", b"\x80\xff", b'"W/x", a=b; c', b"~!@#$%^&*()"],
)
def test_decode_sendable_header_values_are_kept(value: bytes) -> None:
    headers = msgpack.packb([[b"x-a", value]], use_bin_type=True)
    decoded = decode(fields_with(headers=headers))
    assert isinstance(decoded, CachedEntry)
    assert decoded.headers == [(b"x-a", value)]


def test_decode_body_without_content_length_accepted() -> None:
    headers = msgpack.packb([[b"content-type", b"text/plain"]], use_bin_type=True)
    decoded = decode(fields_with(headers=headers, body=b"any length"))
    assert isinstance(decoded, CachedEntry)
    assert decoded.body == b"any length"


@pytest.mark.parametrize("auth", [b"0", b"", b"true", b"yes", b"11", b"\x01"])
def test_decode_auth_only_one_is_true(auth: bytes) -> None:
    decoded = decode(fields_with(auth=auth))
    assert isinstance(decoded, CachedEntry)
    assert decoded.shared_with_auth is False


@pytest.mark.parametrize(
    "vary",
    [
        pytest.param(msgpack.packb(["b", "a"]), id="unsorted"),
        pytest.param(msgpack.packb(["a", "a"]), id="duplicate"),
        pytest.param(msgpack.packb("accept"), id="str"),
        pytest.param(msgpack.packb([b"accept"], use_bin_type=True), id="bytes-item"),
        pytest.param(msgpack.packb([1]), id="int-item"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\x91\xa1\xff", id="invalid-utf8"),
        pytest.param(b"\x92\xa6accept", id="truncated"),
        pytest.param(msgpack.packb(["accept language"]), id="space-in-name"),
        pytest.param(msgpack.packb(["accept\r\nx"]), id="crlf-in-name"),
        pytest.param(msgpack.packb(["x:y"]), id="colon-in-name"),
        pytest.param(msgpack.packb([""]), id="empty-name"),
        pytest.param(msgpack.packb(["Accept"]), id="uppercase-name"),
    ],
)
def test_decode_bad_marker_is_none(vary: bytes) -> None:
    assert decode({F_VERSION: SCHEMA_VERSION, F_VARY: vary}) is None


def test_decode_marker_wins_over_entry_fields() -> None:
    fields = encode(ENTRY)
    fields.update(encode_marker(VaryMarker(("accept",))))
    assert decode(fields) == VaryMarker(("accept",))


# -- decode: random bytes never raise -----------------------------------------------------


def random_bytes(rng: random.Random) -> bytes:
    """Return random bytes, sometimes short, sometimes a valid-looking prefix."""
    length = rng.choice([0, 1, 2, 3, 5, 8, 16, 64, 300])
    data = bytes(rng.getrandbits(8) for _ in range(length))
    if rng.random() < 0.3:
        data = rng.choice([b"\x90", b"\x91", b"\x92\x92", b"\xdc\x00\x05", b"1", b"-"]) + data
    return data


def check_decoded(fields: Fields) -> None:
    """Assert that decode returned None or a value that survives another round trip."""
    decoded = decode(fields)
    if isinstance(decoded, CachedEntry):
        assert decode(encode(decoded)) == decoded
    elif isinstance(decoded, VaryMarker):
        assert decode(encode_marker(decoded)) == decoded
    else:
        assert decoded is None


def test_decode_random_field_never_raises() -> None:
    rng = random.Random(20240601)
    names = [*sorted(encode(ENTRY)), F_VARY]
    for _ in range(600):
        fields = encode(ENTRY)
        for name in rng.sample(names, rng.randint(1, 3)):
            fields[name] = random_bytes(rng)
        check_decoded(fields)


@pytest.mark.parametrize(
    "name", [F_STATUS, F_HEADERS, F_STORED_AT, F_FRESH_FOR, F_STALE_FOR, F_TAGS]
)
def test_decode_random_bytes_in_field_is_none(name: bytes) -> None:
    # None of these fields can be read from random bytes that start with a byte no valid
    # value starts with ("\xc1" is never valid msgpack, nor the start of a number).
    rng = random.Random(name)
    for _ in range(200):
        fields = encode(ENTRY)
        fields[name] = b"\xc1" + random_bytes(rng)
        assert decode(fields) is None


def test_decode_all_fields_random_never_raises() -> None:
    rng = random.Random(7)
    names = [*sorted(encode(ENTRY)), F_VARY]
    for _ in range(400):
        fields = {name: random_bytes(rng) for name in names if rng.random() < 0.9}
        fields[F_VERSION] = SCHEMA_VERSION
        check_decoded(fields)


def test_decode_flipped_bytes_in_headers_never_raise() -> None:
    rng = random.Random(99)
    packed = bytearray(encode(ENTRY)[F_HEADERS])
    for _ in range(400):
        mutated = bytearray(packed)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.getrandbits(8)
        check_decoded(fields_with(headers=bytes(mutated)))


# -- request_vary (the variant's request header values, for inspection) -------------------


def test_request_vary_round_trip() -> None:
    entry = CachedEntry(
        status=200,
        headers=[],
        body=b"",
        stored_at=0.0,
        fresh_for=1.0,
        request_vary=(("accept", b"text/html"), ("accept-language", None), ("x", b"")),
    )
    assert decode(encode(entry)) == entry


@pytest.mark.parametrize("name", sorted(REDACTED_HEADERS))
def test_request_vary_credentials_redacted(name: str) -> None:
    entry = CachedEntry(
        status=200,
        headers=[],
        body=b"",
        stored_at=0.0,
        fresh_for=1.0,
        request_vary=((name, b"Bearer secret"), ("accept", b"text/html")),
    )
    fields = encode(entry)
    assert b"secret" not in b"".join(fields.values())
    decoded = decode(fields)
    assert isinstance(decoded, CachedEntry)
    assert decoded.request_vary == ((name, REDACTED), ("accept", b"text/html"))


def test_request_vary_absent_credential_stays_absent() -> None:
    entry = CachedEntry(
        status=200,
        headers=[],
        body=b"",
        stored_at=0.0,
        fresh_for=1.0,
        request_vary=(("authorization", None),),
    )
    assert decode(encode(entry)) == entry


def test_request_vary_missing_field_is_empty() -> None:
    # Entries written before the field existed still read.
    decoded = decode(fields_without(F_VARY_REQUEST))
    assert isinstance(decoded, CachedEntry)
    assert decoded.request_vary == ()


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(msgpack.packb([["accept"]]), id="single"),
        pytest.param(msgpack.packb([[b"accept", b"x"]], use_bin_type=True), id="bytes-name"),
        pytest.param(msgpack.packb([["accept", "x"]]), id="str-value"),
        pytest.param(msgpack.packb([["accept", 1]]), id="int-value"),
        pytest.param(msgpack.packb(7), id="int"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="reserved-byte"),
    ],
)
def test_request_vary_malformed_is_none(raw: bytes) -> None:
    assert decode(fields_with(varyreq=raw)) is None
