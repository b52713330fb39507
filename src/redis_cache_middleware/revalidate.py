"""Stale entries and the app: which stale entry may stand in for an error
(stale-if-error, RFC 5861 4) and which the app is asked to revalidate with its validators
(RFC 9111 4.3), and the scope that asks it.

May call: ``policy``. No Redis, no app.
"""

from __future__ import annotations

from . import policy
from ._types import Scope
from .admit import Request
from .entry import CachedEntry


def stand_ins(
    stale: CachedEntry, request: Request, now: float
) -> tuple[CachedEntry | None, CachedEntry | None]:
    """Return what a stale entry found for ``request`` does for its forward: the fallback
    that answers instead of an error status (within ``stale-if-error``), and the entry
    whose validators are sent to the app (unless the client sent its own)."""
    fallback = revalidate = None
    if policy.can_serve_stale_on_error(stale.fresh_for, stale.age(now), stale.stale_if_error):
        fallback = stale
    if has_validators(stale) and not request.is_conditional:
        revalidate = stale
    return fallback, revalidate


def has_validators(entry: CachedEntry) -> bool:
    """Return whether the entry can be revalidated (it has an ETag or Last-Modified)."""
    etag, last_modified = policy.get_validators(entry.headers)
    return etag is not None or last_modified is not None


def with_validators(scope: Scope, entry: CachedEntry) -> Scope:
    """Return a copy of the scope that asks the app whether the entry is still current."""
    etag, last_modified = policy.get_validators(entry.headers)
    headers = [
        (k, v) for k, v in scope["headers"] if k not in (b"if-none-match", b"if-modified-since")
    ]
    if etag is not None:
        headers.append((b"if-none-match", etag))
    if last_modified is not None:
        headers.append((b"if-modified-since", last_modified))
    return {**scope, "headers": headers}
