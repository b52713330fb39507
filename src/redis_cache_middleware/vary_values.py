"""The request values a variant is keyed on, as their fields' syntax lets two of them match.

RFC 9111 4.1: the fields a response varies on match when one request's can be turned into
the other's by adding or removing whitespace where the field's syntax allows it, combining
field lines, or a normalisation "known to have identical semantics" by the field's
specification: reordering members whose order is not significant, lowering the case of what
is case-insensitive. ``normalise`` does that for the fields of ``FIELDS``, so that
``Accept-Encoding: gzip, br``, ``br,gzip`` and ``GZIP, br`` share a variant; any other field
(``Cookie`` and ``Authorization`` among them: credentials are compared exactly) is kept as
sent, less the whitespace around it. A value that does not follow its field's grammar is kept
as sent too: no normalisation is known to keep its meaning.

What each known field allows (RFC 9110 12.5, 12.4.2, 8.3.1, 8.4.1, 5.6):

- members are separated by commas with optional whitespace; empty members are dropped, so an
  empty or all-empty value stays present and empty (``Accept-Encoding:`` asks for identity,
  which differs from the field's absence);
- the item before a member's weight is case-insensitive (media type and subtype, charset,
  content coding, language range) and lowercased; parameter names are lowercased, parameter
  values (``Accept`` only) kept as sent, since some are case-sensitive;
- a weight is written canonically: ``q=0.500`` is ``q=0.5``, ``Q=0`` is ``q=0``, and ``q=1``
  (the default) is dropped; a weight is never removed otherwise;
- ``Accept``, ``Accept-Charset`` and ``Accept-Encoding`` rank by weight, not by position,
  so their members are sorted; ``Accept-Language`` is not reordered, because RFC 4647 3.4
  reads a language priority list in its order when the weights tie. Nor is any field whose
  members name the same item twice, where a parser may keep the first or the last.

Pure; ``admit.Request.values_for`` applies it to every value it returns, so the variant a
lookup computes is the one a store writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

#: RFC 9110 5.6.2 ``token``.
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
#: RFC 9110 12.4.2 ``qvalue``.
_QVALUE = re.compile(rb"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
#: RFC 9110 5.6.4 ``quoted-string``.
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_PARAMETER = re.compile(rb"(" + _TOKEN + rb")=(" + _TOKEN + rb"|" + _QUOTED + rb")")
#: Splits a value into list members and parameters, quoted strings kept whole: the
#: separators ``,`` and ``;`` and the runs between them.
_PIECES = re.compile(rb'[,;]|(?:[^,;"]|' + _QUOTED + rb")+")
_OWS = b" \t"


@dataclass(frozen=True, slots=True)
class ListField:
    """What a field's syntax allows when comparing two of its values."""

    #: A member's item, before its parameters and weight (case-insensitive).
    item: re.Pattern[bytes]
    #: Whether an item may carry parameters before its weight (media types).
    parameters: bool
    #: Whether the members' order carries no meaning (the weights rank them).
    unordered: bool


#: The fields whose values ``normalise`` knows how to compare, by lowercase name.
FIELDS: dict[str, ListField] = {
    # RFC 9110 12.5.1: media-range [ weight ]; type and subtype are case-insensitive.
    "accept": ListField(re.compile(_TOKEN + rb"/" + _TOKEN), parameters=True, unordered=True),
    # RFC 9110 12.5.2: ( token / "*" ) [ weight ]; charset names are case-insensitive.
    "accept-charset": ListField(re.compile(_TOKEN), parameters=False, unordered=True),
    # RFC 9110 12.5.3: ( content-coding / "identity" / "*" ) [ weight ]; codings are
    # case-insensitive tokens.
    "accept-encoding": ListField(re.compile(_TOKEN), parameters=False, unordered=True),
    # RFC 9110 12.5.4: language-range [ weight ] (RFC 4647 2.1), case-insensitive; the
    # order is a priority among equal weights (RFC 4647 3.4), so it is kept.
    "accept-language": ListField(
        re.compile(rb"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*"), parameters=False, unordered=False
    ),
}


#: Values up to this long are remembered (``MEMO_SIZE`` of them, least recently used out):
#: clients send few distinct ones, and a lookup and its store each ask for them.
MEMO_VALUE = 512
MEMO_SIZE = 1024


def normalise(name: str, value: bytes) -> bytes:
    """Return a request header's value as variants compare it: for a field of ``FIELDS``
    whose value follows its grammar, its canonical form; otherwise the value without the
    whitespace around it. ``name`` is lowercase."""
    if len(value) <= MEMO_VALUE:
        return _remembered(name, value)
    return _normalise(name, value)


def _normalise(name: str, value: bytes) -> bytes:
    value = value.strip(_OWS)
    syntax = FIELDS.get(name)
    if syntax is None:
        return value
    members = _members(value, syntax)
    if members is None:
        return value
    if syntax.unordered:
        items = [item for item, _ in members]
        if len(set(items)) == len(items):
            members.sort()
    return b", ".join(item + weight for item, weight in members)


_remembered = lru_cache(maxsize=MEMO_SIZE)(_normalise)


def _members(value: bytes, syntax: ListField) -> list[tuple[bytes, bytes]] | None:
    """Return the value's non-empty members as (canonical item with its parameters,
    canonical weight), or None when the value does not follow the field's grammar."""
    if b'"' in value and not syntax.parameters:
        return None
    pieces = _PIECES.findall(value)
    if b"".join(pieces) != value:
        return None  # an unterminated quoted string
    members: list[tuple[bytes, bytes]] = []
    parts: list[bytes] = []
    for piece in [*pieces, b","]:
        if piece == b",":
            member = _member(parts, syntax) if parts else (b"", b"")
            if member is None:
                return None
            if member[0]:
                members.append(member)
            parts = []
        elif piece == b";":
            parts += [b"", b""] if not parts else [b""]  # an empty item, then its parameter
        elif parts:
            parts[-1] += piece
        else:
            parts.append(piece)
    return members


def _member(parts: list[bytes], syntax: ListField) -> tuple[bytes, bytes] | None:
    """Return one member's canonical (item with parameters, weight); ``(b"", b"")`` for an
    empty member; None when it does not follow the grammar. ``parts`` is the member split at
    its semicolons (the first part the item)."""
    item = parts[0].strip(_OWS)
    if not item:
        return (b"", b"") if len(parts) == 1 else None
    if not syntax.item.fullmatch(item):
        return None
    canonical = item.lower()
    weight = b""
    for index, part in enumerate(parts[1:], start=2):
        part = part.strip(_OWS)
        if not part and syntax.parameters:
            continue  # RFC 9110 5.6.6: an empty parameter
        match = _PARAMETER.fullmatch(part)
        if match is None:
            return None
        name = match.group(1).lower()
        if name == b"q":
            parsed = _weight(match.group(2))
            if parsed is None or any(p.strip(_OWS) for p in parts[index:]):
                return None  # a bad weight, or parameters after it
            weight = parsed
            break
        if not syntax.parameters:
            return None
        canonical += b";" + name + b"=" + match.group(2)
    return canonical, weight


def _weight(qvalue: bytes) -> bytes | None:
    """Return a weight as compared: ``;q=`` and the shortest spelling of ``qvalue``, empty
    for the default weight 1; None when it is no qvalue."""
    if not _QVALUE.fullmatch(qvalue):
        return None
    if qvalue.startswith(b"1"):
        return b""
    digits = qvalue[2:].rstrip(b"0")
    return b";q=0." + digits if digits else b";q=0"
