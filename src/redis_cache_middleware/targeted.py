"""Targeted cache-control fields (RFC 9213): ``CDN-Cache-Control`` and the operator's own,
which replace ``Cache-Control`` for this cache's decisions; pure.

``effective_cache_control`` is the one function the rest of the code reads a response's
directives with (re-exported by ``policy``). ``parse_targeted`` reads one targeted field, a
Structured Fields Dictionary, with ``parse_dictionary``, which follows RFC 9651 4.2 (which
obsoletes RFC 8941) to the letter: any parsing error makes the whole field invalid (None),
never a partial reading, because RFC 9213 says a targeted field with a parsing error is
ignored as if it were absent. Parameters are parsed (their syntax counts for validity) and
then dropped: RFC 9213 2.1 says they are to be ignored.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from decimal import Decimal

from ._types import RawHeaders
from .headers import MAX_DELTA_SECONDS, CacheControl, parse_cache_control

_LCALPHA = frozenset("abcdefghijklmnopqrstuvwxyz")
_DIGITS = frozenset("0123456789")
_ALPHA = _LCALPHA | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_KEY_FIRST = _LCALPHA | {"*"}
_KEY_CHARS = _LCALPHA | _DIGITS | frozenset("_-.*")
#: RFC 9110 ``tchar``, plus ``:`` and ``/`` (RFC 9651 ``sf-token``).
_TOKEN_CHARS = _ALPHA | _DIGITS | frozenset("!#$%&'*+-.^_`|~:/")
_BASE64_CHARS = _ALPHA | _DIGITS | frozenset("+/=")
_HEX_LOWER = frozenset("0123456789abcdef")


class Token(str):
    """An ``sf-token`` (told apart from an ``sf-string``, which is a plain ``str``)."""

    __slots__ = ()


#: A Bare Item's value: Integer or Date (``int``), Decimal, String or Display String (``str``),
#: ``Token`` (a ``str`` too), Byte Sequence (``bytes``) or Boolean.
BareItem = int | Decimal | str | bytes | bool
#: A Dictionary member's value: an Item, or an Inner List of Items (parameters dropped).
Member = BareItem | tuple[BareItem, ...]


class _Invalid(Exception):
    """A parsing error: the field is invalid as a whole."""


class _Parser:
    """RFC 9651 section 4.2's algorithms over one input string, consumed left to right."""

    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        char = self.peek()
        if not char:
            raise _Invalid("unexpected end")
        self.pos += 1
        return char

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.pos += 1

    def dictionary(self) -> dict[str, Member]:
        """RFC 9651 4.2.2; a key seen again replaces the earlier value, in place."""
        members: dict[str, Member] = {}
        while self.peek():
            key = self.key()
            value: Member
            if self.peek() == "=":
                self.pos += 1
                value = self.item_or_inner_list()
            else:
                value = True
                self.parameters()
            members[key] = value
            self.skip(" \t")
            if not self.peek():
                return members
            if self.take() != ",":
                raise _Invalid("expected a comma")
            self.skip(" \t")
            if not self.peek():
                raise _Invalid("trailing comma")
        return members

    def item_or_inner_list(self) -> Member:
        if self.peek() == "(":
            return self.inner_list()
        value = self.bare_item()
        self.parameters()
        return value

    def inner_list(self) -> tuple[BareItem, ...]:
        self.pos += 1  # "("
        items: list[BareItem] = []
        while True:
            self.skip(" ")
            if self.peek() == ")":
                self.pos += 1
                self.parameters()
                return tuple(items)
            items.append(self.bare_item())
            self.parameters()
            if self.peek() not in (" ", ")"):
                raise _Invalid("inner list")

    def parameters(self) -> None:
        while self.peek() == ";":
            self.pos += 1
            self.skip(" ")
            self.key()
            if self.peek() == "=":
                self.pos += 1
                self.bare_item()

    def key(self) -> str:
        start = self.pos
        if not self.peek() or self.peek() not in _KEY_FIRST:
            raise _Invalid("key")
        while self.peek() and self.peek() in _KEY_CHARS:
            self.pos += 1
        return self.text[start : self.pos]

    def bare_item(self) -> BareItem:
        char = self.peek()
        if char == "-" or (char and char in _DIGITS):
            return self.number()
        if char == '"':
            return self.string()
        if char == "*" or (char and char in _ALPHA):
            return self.token()
        if char == ":":
            return self.byte_sequence()
        if char == "?":
            return self.boolean()
        if char == "@":
            self.pos += 1
            date = self.number()
            if not isinstance(date, int):
                raise _Invalid("date")
            return date
        if char == "%":
            return self.display_string()
        raise _Invalid("bare item")

    def number(self) -> int | Decimal:
        sign = 1
        if self.peek() == "-":
            self.pos += 1
            sign = -1
        if not self.peek() or self.peek() not in _DIGITS:
            raise _Invalid("number")
        start = self.pos
        decimal = False
        while self.peek():
            char = self.peek()
            if char in _DIGITS:
                self.pos += 1
            elif char == "." and not decimal:
                if self.pos - start > 12:
                    raise _Invalid("decimal too long")
                decimal = True
                self.pos += 1
            else:
                break
            if self.pos - start > (16 if decimal else 15):
                raise _Invalid("number too long")
        number = self.text[start : self.pos]
        if not decimal:
            return sign * int(number)
        if number.endswith(".") or len(number) - number.index(".") - 1 > 3:
            raise _Invalid("decimal fraction")
        return sign * Decimal(number)

    def string(self) -> str:
        self.pos += 1  # opening quote
        chars: list[str] = []
        while True:
            char = self.take()
            if char == "\\":
                escaped = self.take()
                if escaped not in ('"', "\\"):
                    raise _Invalid("escape")
                chars.append(escaped)
            elif char == '"':
                return "".join(chars)
            elif not " " <= char <= "~":
                raise _Invalid("string character")
            else:
                chars.append(char)

    def token(self) -> Token:
        start = self.pos
        self.pos += 1
        while self.peek() and self.peek() in _TOKEN_CHARS:
            self.pos += 1
        return Token(self.text[start : self.pos])

    def byte_sequence(self) -> bytes:
        self.pos += 1  # opening colon
        end = self.text.find(":", self.pos)
        if end < 0:
            raise _Invalid("byte sequence")
        content = self.text[self.pos : end]
        self.pos = end + 1
        if not set(content) <= _BASE64_CHARS:
            raise _Invalid("base64")
        try:
            return base64.b64decode(content + "=" * (-len(content) % 4))
        except (binascii.Error, ValueError):
            raise _Invalid("base64") from None

    def boolean(self) -> bool:
        self.pos += 1  # "?"
        char = self.take()
        if char not in ("0", "1"):
            raise _Invalid("boolean")
        return char == "1"

    def display_string(self) -> str:
        self.pos += 1  # "%"
        if self.take() != '"':
            raise _Invalid("display string")
        octets = bytearray()
        while True:
            char = self.take()
            if char == "%":
                digits = self.take() + self.take()
                if not set(digits) <= _HEX_LOWER:
                    raise _Invalid("percent escape")
                octets.append(int(digits, 16))
            elif char == '"':
                try:
                    return octets.decode("utf-8")
                except UnicodeDecodeError:
                    raise _Invalid("utf-8") from None
            elif not " " <= char <= "~":
                raise _Invalid("display string character")
            else:
                octets += char.encode("ascii")


def parse_dictionary(lines: Iterable[bytes]) -> dict[str, Member] | None:
    """Return the Dictionary that the field lines hold together (joined with commas, RFC 9651
    4.2), or None on any parsing error (non-ASCII bytes included). An empty field gives an
    empty dictionary; parameters are dropped after their syntax is checked."""
    try:
        text = b",".join(lines).decode("ascii")
    except UnicodeDecodeError:
        return None
    parser = _Parser(text.lstrip(" "))
    # RFC 9651 4.2: leading SP discarded; the members parse (OWS between them); then
    # trailing SP discarded, and anything left over is an error.
    try:
        members = parser.dictionary()
    except _Invalid:
        return None
    return members


#: Directives of a targeted field that restrict: present in any form, they count (a
#: ``no-store=?0`` is no value these take, and the safe reading keeps the restriction).
_TARGETED_RESTRICTIONS = {
    "no-store": "no_store",
    "no-cache": "no_cache",
    "private": "private",
    "must-revalidate": "must_revalidate",
    "proxy-revalidate": "proxy_revalidate",
}
#: Delta directives a response's targeted field may carry (``min-fresh``, ``max-stale`` and
#: ``only-if-cached`` are request directives: ignored there, as in ``Cache-Control``).
_TARGETED_DELTAS = {
    "max-age": "max_age",
    "s-maxage": "s_maxage",
    "stale-while-revalidate": "stale_while_revalidate",
    "stale-if-error": "stale_if_error",
}


def parse_targeted(name: str, lines: Iterable[bytes]) -> CacheControl | None:
    """Return the directives of a targeted cache-control field (RFC 9213 2.1) such as
    ``CDN-Cache-Control``, or None when the field is not valid and non-empty, so that it is
    ignored as if absent.

    The field is a Structured Fields Dictionary (RFC 9651); any parsing error invalidates it
    whole (``max-age=60, private,`` included), and so does an empty one. Members keep their
    ``Cache-Control`` meaning; a value of a type the directive does not take is not
    consumed (RFC 9213 2.1) and reads safely: a delta that is not a non-negative Integer
    (``max-age=1.5``, ``max-age="60"``) is 0, ``public`` counts only as Boolean true, and a
    restricting directive (``no-store``, ``no-cache``, ``private``, ``must-revalidate``,
    ``proxy-revalidate``) counts in any form. A key given twice keeps its last value (RFC
    9651). Unknown directives and parameters are ignored.
    """
    members = parse_dictionary(lines)
    if not members:
        return None
    flags: dict[str, bool] = {}
    deltas: dict[str, int] = {}
    for key, value in members.items():
        if key in _TARGETED_RESTRICTIONS:
            flags[_TARGETED_RESTRICTIONS[key]] = True
        elif key == "public":
            if value is True:
                flags["public"] = True
        elif key in _TARGETED_DELTAS:
            deltas[_TARGETED_DELTAS[key]] = _targeted_delta(value)
    return CacheControl(**flags, **deltas, source=name)  # type: ignore[arg-type]


def _targeted_delta(value: Member) -> int:
    """A delta-seconds of a targeted field: a non-negative Integer, else 0 (stale)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return min(value, MAX_DELTA_SECONDS)


def effective_cache_control(headers: RawHeaders, targets: Sequence[bytes] = ()) -> CacheControl:
    """Return the cache directives that rule a response, stored or received: the first field
    of ``targets`` (lowercase targeted field names in precedence order, the operator's own
    first, e.g. ``(b"redis-cache-control", b"cdn-cache-control")``, from
    ``CacheConfig.targeted_fields``) that is present, valid and non-empty, else
    ``Cache-Control`` (RFC 9213 2.1).

    Every decision the cache makes from a response's directives (storing, freshness, stale
    windows, whether it is shared with private requests) reads them here, so that a targeted
    field replaces ``Cache-Control`` everywhere alike. The result's ``source`` names the
    field used; when it is a targeted one, ``Expires`` is to be ignored too. The headers are
    never changed: the client still gets every field the app sent. With no ``targets`` this
    is ``parse_cache_control`` of the ``Cache-Control`` lines.
    """
    if targets:
        found: dict[bytes, list[bytes]] = {}
        for name, value in headers:
            if name in targets:
                found.setdefault(name, []).append(value)
        for target in targets:
            lines = found.get(target)
            if lines:
                directives = parse_targeted(target.decode("latin-1"), lines)
                if directives is not None:
                    return directives
    return parse_cache_control(v for n, v in headers if n == b"cache-control")
