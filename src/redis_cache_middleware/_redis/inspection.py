"""Inspection, for the admin tools: what is stored for a URL (``EntryInfo`` per variant) and
how much the namespace holds (``NamespaceStats``).

It only reads: HGETALL, PTTL and SMEMBERS of one URL's keys, and SCAN, HEXISTS and MEMORY
USAGE over the namespace. Of the cache's modules it imports ``state``, and ``lookup`` to
decode entries as a lookup does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .. import entry as entry_codec
from .. import keys
from ..entry import CachedEntry, VaryMarker
from .lookup import decode_reply
from .state import CacheState


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """One stored variant, as ``inspect_url`` sees it."""

    key: str
    status: int
    stored_at: float
    age: float
    ttl_left: float | None
    fresh_for: float
    stale_for: float
    tags: tuple[str, ...]
    size: int
    vary: tuple[str, ...]
    vary_values: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class NamespaceStats:
    """What ``scan_stats`` found in the namespace."""

    entries: int
    bytes: int
    keys_scanned: int
    sampled: bool


async def inspect_url(state: CacheState, uhash: str) -> list[EntryInfo]:
    """Return what is stored for the URL with this hash: one ``EntryInfo`` per variant,
    leaving out what a lookup reads as a miss."""
    client = state.client
    gen = await state.current_generation()
    base = keys.url_key(state.namespace, gen, uhash)
    async with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(base)
        pipe.pttl(base)
        pipe.smembers(keys.variants_key(base))
        found, base_ttl, members = await pipe.execute(raise_on_error=False)
    decoded = decode_reply(found) if base_ttl != -1 else None
    now = time.time()
    if isinstance(decoded, CachedEntry):
        return [_info(base, decoded, base_ttl, (), now)]
    if not isinstance(decoded, VaryMarker) or not isinstance(members, (set, list)):
        return []
    vkeys = [
        keys.variant_key(base, m.decode("ascii"))
        for m in sorted(members)
        if isinstance(m, bytes) and m.isascii()
    ]
    async with client.pipeline(transaction=False) as pipe:
        for vkey in vkeys:
            pipe.hgetall(vkey)
            pipe.pttl(vkey)
        replies = await pipe.execute(raise_on_error=False)
    infos = []
    for i, vkey in enumerate(vkeys):
        variant = decode_reply(replies[2 * i]) if replies[2 * i + 1] != -1 else None
        if isinstance(variant, CachedEntry):
            infos.append(_info(vkey, variant, replies[2 * i + 1], decoded.names, now))
    return infos


async def scan_stats(state: CacheState, sample: int) -> NamespaceStats:
    """Count the namespace's entries (SCAN) and measure up to ``sample`` of them."""
    client = state.client
    gen = await state.current_generation()
    prefix = f"{state.namespace}:{gen}:"
    bases: list[bytes] = []
    variants: list[bytes] = []
    scanned = 0
    async for raw in client.scan_iter(match=prefix + "*", count=1000):
        scanned += 1
        key = bytes(raw) if not isinstance(raw, str) else raw.encode()
        tail = key[len(prefix) :]
        if tail.startswith(b"{") and tail.endswith(b"}"):
            bases.append(key)
        elif b"}:v:" in tail:
            variants.append(key)
    entry_bases: list[bytes] = []
    for i in range(0, len(bases), 500):
        chunk = bases[i : i + 500]
        async with client.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.hexists(key, entry_codec.F_STATUS)
            flags = await pipe.execute(raise_on_error=False)
        entry_bases += [k for k, f in zip(chunk, flags, strict=True) if f is True or f == 1]
    entry_keys = entry_bases + variants
    measured = entry_keys[:sample]
    size = 0
    if measured:
        async with client.pipeline(transaction=False) as pipe:
            for key in measured:
                pipe.memory_usage(key)
            usages = await pipe.execute(raise_on_error=False)
        size = sum(int(u) for u in usages if isinstance(u, int))
        if len(entry_keys) > len(measured):
            size = int(size * len(entry_keys) / len(measured))
    return NamespaceStats(
        entries=len(entry_keys),
        bytes=size,
        keys_scanned=scanned,
        sampled=len(entry_keys) > len(measured),
    )


def _info(key: str, entry: CachedEntry, pttl: Any, names: tuple[str, ...], now: float) -> EntryInfo:
    ttl_left = int(pttl) / 1000 if isinstance(pttl, int) and pttl >= 0 else None
    return EntryInfo(
        key=key,
        status=entry.status,
        stored_at=entry.stored_at,
        age=entry.age(now),
        ttl_left=ttl_left,
        fresh_for=entry.fresh_for,
        stale_for=entry.stale_for,
        tags=entry.tags,
        size=len(entry.body),
        vary=names,
        vary_values={n: None if v is None else v.decode("latin-1") for n, v in entry.request_vary},
    )
