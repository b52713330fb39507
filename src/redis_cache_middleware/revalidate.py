"""Stale entries and the app: which stale entry may stand in for an error
(stale-if-error, RFC 5861 4, and the operator's ``stale_on_error_grace``, RFC 9111 4.2.4) and
which the app is asked to revalidate with its validators (RFC 9111 4.3), and the scope that
asks it.

May call: ``policy``. No Redis, no app.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import policy
from ._types import RawHeaders, Scope
from .admit import Request
from .entry import CachedEntry


def stand_ins(
    stale: CachedEntry, request: Request, now: float, grace: float = 0.0
) -> tuple[CachedEntry | None, CachedEntry | None]:
    """Return what a stale entry found for ``request`` does for its forward: the fallback
    that may answer instead of the app's failure (within ``stale-if-error`` or ``grace``
    past freshness; ``stand_in_detail`` decides when the app has failed), and the entry
    whose validators are sent to the app (unless the client sent its own)."""
    fallback = revalidate = None
    window = max(stale.stale_if_error, grace)
    if policy.can_serve_stale_on_error(stale.fresh_for, stale.age(now), window):
        fallback = stale
    if has_validators(stale) and not request.is_conditional:
        revalidate = stale
    return fallback, revalidate


def stand_in_detail(
    stale: CachedEntry, now: float, grace: float, targets: Sequence[bytes] = ()
) -> str | None:
    """Return why a stale entry may answer instead of the app's failure now, as the
    ``Cache-Status`` detail, or None when it may not.

    ``stale-if-error`` within the window the entry was stored with (RFC 5861 4; none when its
    response forbade serving it stale); ``stale-on-error`` within ``grace`` seconds past
    freshness (the operator's ``stale_on_error_grace``, RFC 9111 4.2.4's "out-of-band
    contract"), unless its stored ``Cache-Control`` forbids stale use (``forbids_stale``).
    Called only once the app has failed: nothing here runs on a hit.
    """
    age = stale.age(now)
    if policy.can_serve_stale_on_error(stale.fresh_for, age, stale.stale_if_error):
        return "stale-if-error"
    if (
        grace > 0
        and policy.can_serve_stale_on_error(stale.fresh_for, age, grace)
        and not forbids_stale(stale.headers, targets)
    ):
        return "stale-on-error"
    return None


def forbids_stale(headers: RawHeaders, targets: Sequence[bytes] = ()) -> bool:
    """Return whether a stored response's directives forbid a shared cache to serve it
    stale (RFC 9111 4.2.4): ``no-cache`` (5.2.2.4), ``must-revalidate`` (5.2.2.2),
    ``proxy-revalidate`` (5.2.2.8) or ``s-maxage`` (5.2.2.10, which implies it). The
    directives are ``policy.effective_cache_control``'s: a targeted field (``targets``,
    RFC 9213) that was present and valid replaces ``Cache-Control``, as when it was stored."""
    cc = policy.effective_cache_control(headers, targets)
    return cc.no_cache or cc.must_revalidate or cc.proxy_revalidate or cc.s_maxage is not None


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
