"""Byte ranges answered from a stored response (RFC 9110 14): reading a ``Range`` header,
what it asks of a representation of a given length, and whether ``If-Range`` lets it apply
(RFC 9110 13.1.5). Pure: no I/O, no clock; junk never raises.

The cache answers one ``bytes`` range of a stored 200 with a 206; everything else it may
ignore (RFC 9110 14.2: "A server MAY ignore the Range header field"), and then the whole
response is sent as a 200: another unit, a header that does not parse, several ranges (a
``multipart/byteranges`` body costs more to build than the whole and is a known
denial-of-service lever, RFC 9110 14.1.1), or an ``If-Range`` that does not hold.

May call: ``headers`` (HTTP-dates, validators). Nothing else.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ._types import RawHeaders
from .headers import get_validators, parse_http_date

#: A position or length longer than this many digits is past any body we store: read as
#: ``HUGE`` (not parsed, so that a header of a million digits costs nothing).
MAX_DIGITS = 18
HUGE: int = 10**MAX_DIGITS


class Whole(enum.Enum):
    """A range request answered otherwise than with one part."""

    #: The Range header is ignored: the whole representation, 200.
    FULL = "full"
    #: No byte of the representation is asked for: 416 (RFC 9110 15.5.17).
    UNSATISFIABLE = "unsatisfiable"


@dataclass(frozen=True, slots=True)
class Part:
    """One satisfiable byte range: the first and last positions, inclusive."""

    first: int
    last: int

    @property
    def length(self) -> int:
        """Return the number of bytes in the part."""
        return self.last - self.first + 1

    def content_range(self, complete: int) -> bytes:
        """Return the ``Content-Range`` of this part of a representation ``complete`` bytes
        long (RFC 9110 14.4)."""
        return b"bytes %d-%d/%d" % (self.first, self.last, complete)


def unsatisfied_range(complete: int) -> bytes:
    """Return the ``Content-Range`` of a 416: the representation's length (RFC 9110 14.4)."""
    return b"bytes */%d" % complete


#: A range-spec as read: ``(first, last)``; ``first`` None for a suffix range (``-N``, then
#: ``last`` is N), ``last`` None for an open one (``N-``).
Spec = tuple[int | None, int | None]


def _position(digits: bytes) -> int | None:
    """Return ``1*DIGIT`` as a number (``HUGE`` past ``MAX_DIGITS``), None if not digits."""
    if not digits or not digits.isdigit():  # bytes.isdigit: ASCII digits only
        return None
    if len(digits) > MAX_DIGITS:
        return HUGE
    return int(digits.decode("ascii"))


def parse_range(value: bytes) -> list[Spec] | None:
    """Return the range-specs of a ``bytes`` Range header, or None when the header is to be
    ignored: another unit, or a ranges-specifier that is invalid (RFC 9110 14.1.1: a spec
    that is not ``first-[last]`` or ``-suffix`` in digits, or whose last is before its
    first). Empty list elements are skipped (RFC 9110 5.6.1)."""
    unit, equals, ranges = value.strip(b" \t").partition(b"=")
    if not equals or unit.lower() != b"bytes":
        return None
    specs: list[Spec] = []
    for element in ranges.split(b","):
        element = element.strip(b" \t")
        if not element:
            continue
        first_digits, dash, last_digits = element.partition(b"-")
        if not dash:
            return None
        if not first_digits:
            suffix = _position(last_digits)
            if suffix is None:
                return None
            specs.append((None, suffix))
            continue
        first = _position(first_digits)
        if first is None:
            return None
        if not last_digits:
            specs.append((first, None))
            continue
        last = _position(last_digits)
        if last is None or last < first:
            return None
        specs.append((first, last))
    return specs or None


def satisfy(spec: Spec, complete: int) -> Part | Whole:
    """Return the part one range-spec selects of a representation ``complete`` bytes long
    (RFC 9110 14.1.2): a last position past the end means the end; a suffix longer than
    the representation means all of it. ``UNSATISFIABLE`` when it starts at or past the
    end, or is a suffix of zero bytes; ``FULL`` for a suffix of an empty representation,
    which is satisfiable but has no byte a 206 could name."""
    first, last = spec
    if first is None:
        suffix = last or 0
        if suffix == 0:
            return Whole.UNSATISFIABLE
        if complete == 0:
            return Whole.FULL
        return Part(max(0, complete - suffix), complete - 1)
    if first >= complete:
        return Whole.UNSATISFIABLE
    end = complete - 1 if last is None else min(last, complete - 1)
    return Part(first, end)


def if_range_holds(value: bytes, headers: RawHeaders, stored_at: float) -> bool:
    """Return whether an ``If-Range`` condition holds for a stored response (RFC 9110
    13.1.5), so that its Range applies.

    An entity-tag holds when it equals the stored ``ETag`` by strong comparison: neither
    weak, the opaque-tags identical (RFC 9110 8.8.3.2). An HTTP-date holds when it is
    exactly the stored ``Last-Modified`` and that date is a strong validator: for a cache,
    one whose entry's ``Date`` is at least a second after it (RFC 9110 8.8.2.2); without a
    ``Date``, the time the entry was stored stands for it (RFC 9110 6.6.1 has a recipient
    record the time it received a response without one).
    """
    value = value.strip(b" \t")
    etag, last_modified = get_validators(headers)
    if value.startswith((b'"', b"W/", b"w/")):
        strong = etag is not None and len(etag) >= 2 and etag[:1] == etag[-1:] == b'"'
        return strong and value == etag
    if last_modified is None or value != last_modified:
        return False
    modified = parse_http_date(last_modified)
    if modified is None:
        return False
    date_value = next((v for n, v in headers if n == b"date"), None)
    date = parse_http_date(date_value) if date_value is not None else stored_at
    return date is not None and date - modified >= 1


def select(
    range_value: bytes, if_range: list[bytes], headers: RawHeaders, stored_at: float, complete: int
) -> Part | Whole:
    """Return how a GET with ``Range: range_value`` (and the ``If-Range`` field lines
    ``if_range``) is answered from a stored 200 whose body is ``complete`` bytes long: one
    ``Part`` (206), ``UNSATISFIABLE`` (416), or ``FULL`` (200, the Range ignored).

    ``FULL`` when ``If-Range`` does not hold (RFC 9110 13.1.5; more than one line is no
    valid If-Range, and so does not hold), when the header is to be ignored
    (``parse_range``), and for more than one range.
    """
    if if_range and (len(if_range) > 1 or not if_range_holds(if_range[0], headers, stored_at)):
        return Whole.FULL
    specs = parse_range(range_value)
    if specs is None or len(specs) > 1:
        return Whole.FULL
    return satisfy(specs[0], complete)
