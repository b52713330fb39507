"""Per-route cache settings, said the HTTP way: ``cache_headers(max_age=60, tags=[...])``.

A route states how it may be cached with the response headers the middleware already reads
(``Cache-Control``, ``Surrogate-Key`` for tags, ``Vary``), so a CDN or a browser in front reads
the same thing, and the middleware's options (``rules``, ``default_ttl``) stay the fallback
for routes that say nothing. Nothing here talks to Redis or needs FastAPI::

    headers = cache_headers(max_age=60, tags=["products"], vary=["Accept-Language"])

    @app.get("/products/{pid}", dependencies=[Depends(headers)])  # FastAPI dependency
    async def product(pid: int) -> Product: ...

    @app.get("/prices")
    @headers.decorate                      # a decorator: FastAPI or Starlette endpoints
    async def prices() -> Prices: ...

    headers.apply(response)                # or by hand, on any Starlette ``Response``

Headers the endpoint sets itself win: ``Cache-Control`` is only set when the response has
none, tags are added to any it names, and ``Vary`` gains only the names it lacks.
"""

# No ``from __future__ import annotations``: FastAPI reads ``CacheHeaders.__call__``'s
# annotation to know it wants the Response, and older FastAPIs cannot resolve a string
# annotation of an instance's method.
import functools
import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from starlette.responses import Response

from .config import MAX_TAG_LENGTH, MAX_TAGS
from .exceptions import ConfigError

__all__ = ["CacheHeaders", "cache_headers"]

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

#: The name of the ``Response`` parameter ``decorate`` adds for FastAPI to fill.
RESPONSE_PARAMETER = "cache_headers_response_"

_FIELD_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
#: A tag goes into the space-separated ``Surrogate-Key``: visible ASCII, no space.
_TAG_RE = re.compile(r"^[\x21-\x7e]+$")


class CacheHeaders:
    """The headers one ``cache_headers(...)`` call stands for, checked when it was made.

    Call it with a ``Response`` (what FastAPI does with a dependency), ``apply`` it to one,
    or ``decorate`` an endpoint with it.
    """

    __slots__ = ("cache_control", "tags", "vary")

    def __init__(self, cache_control: str | None, tags: tuple[str, ...], vary: tuple[str, ...]):
        self.cache_control = cache_control
        self.tags = tags
        self.vary = vary

    def __repr__(self) -> str:
        return (
            f"CacheHeaders(cache_control={self.cache_control!r}, tags={self.tags!r},"
            f" vary={self.vary!r})"
        )

    def apply(self, response: Response) -> None:
        """Set the headers on ``response``, leaving any ``Cache-Control`` it already has."""
        headers = response.headers
        if self.cache_control is not None and "cache-control" not in headers:
            headers["Cache-Control"] = self.cache_control
        if self.tags:
            headers.append("Surrogate-Key", " ".join(self.tags))
        if self.vary:
            named = {
                name.strip().lower() for line in headers.getlist("vary") for name in line.split(",")
            }
            missing = [name for name in self.vary if name.lower() not in named]
            if missing:
                headers.append("Vary", ", ".join(missing))

    def __call__(self, response: Response) -> None:
        """The FastAPI dependency: ``dependencies=[Depends(cache_headers(...))]``.

        FastAPI hands a dependency that asks for a ``Response`` the one it will send (unless
        the endpoint returns a ``Response`` of its own: use ``decorate`` for those).
        """
        self.apply(response)

    def decorate(self, endpoint: Endpoint) -> Endpoint:
        """Wrap an endpoint (sync or async) so that its response carries these headers.

        A ``Response`` the endpoint returns gets them. Otherwise they go on the ``Response``
        FastAPI injects: the wrapper's signature is the endpoint's plus a keyword-only
        ``Response`` parameter (or the endpoint's own one), so FastAPI's routing, validation
        and ``response_model`` see the endpoint as it is.
        """
        signature, name, own = _with_response_parameter(endpoint)

        def finish(result: Any, response: Any) -> Any:
            if isinstance(result, Response):
                self.apply(result)
            elif isinstance(response, Response):
                self.apply(response)
            else:
                raise TypeError(
                    f"{getattr(endpoint, '__qualname__', endpoint)!r} returned"
                    f" {type(result).__name__}, not a Response, and no Response was injected:"
                    " outside FastAPI, return a Response"
                )
            return result

        wrapper: Callable[..., Any]
        if inspect.iscoroutinefunction(endpoint):

            @functools.wraps(endpoint)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                response = kwargs.get(name) if own else kwargs.pop(name, None)
                return finish(await endpoint(*args, **kwargs), response)

        else:

            @functools.wraps(endpoint)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                response = kwargs.get(name) if own else kwargs.pop(name, None)
                return finish(endpoint(*args, **kwargs), response)

        wrapper.__signature__ = signature  # type: ignore[attr-defined]
        return cast(Endpoint, wrapper)


def _with_response_parameter(endpoint: Callable[..., Any]) -> tuple[inspect.Signature, str, bool]:
    """The signature FastAPI should see, the name of its ``Response`` parameter, and whether
    that parameter is the endpoint's own. Annotations are resolved here, in the endpoint's
    module: FastAPI would look names up in this module otherwise."""
    try:
        signature = inspect.signature(endpoint, eval_str=True)
    except (NameError, SyntaxError, TypeError):  # left for FastAPI to report as it would
        signature = inspect.signature(endpoint)
    for parameter in signature.parameters.values():
        annotation = parameter.annotation
        if isinstance(annotation, type) and issubclass(annotation, Response):
            return signature, parameter.name, True
    parameters = list(signature.parameters.values())
    added = inspect.Parameter(
        RESPONSE_PARAMETER, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Response
    )
    at = len(parameters)
    if parameters and parameters[-1].kind is inspect.Parameter.VAR_KEYWORD:
        at -= 1
    parameters.insert(at, added)
    return signature.replace(parameters=parameters), RESPONSE_PARAMETER, False


def cache_headers(
    *,
    max_age: int | None = None,
    s_maxage: int | None = None,
    public: bool = False,
    stale_while_revalidate: int | None = None,
    stale_if_error: int | None = None,
    no_store: bool = False,
    tags: Iterable[str] = (),
    vary: Iterable[str] = (),
) -> CacheHeaders:
    """Return the headers a route's responses should carry for this cache (and any other).

    ``max_age`` and ``s_maxage`` (whole seconds) go into ``Cache-Control``; ``s_maxage`` is
    for shared caches only (this one, a CDN), so browsers keep ``max_age``. ``public`` lets
    the middleware share responses to requests with cookies or ``Authorization``;
    ``stale_while_revalidate`` and ``stale_if_error`` allow serving stale that long past
    freshness; ``no_store`` keeps the route out of every cache. ``tags`` become
    ``Surrogate-Key`` (for ``purge_tag``), ``vary`` the request headers the response
    depends on. A bad argument raises ``ConfigError`` naming it.
    """
    seconds = {
        "max_age": max_age,
        "s_maxage": s_maxage,
        "stale_while_revalidate": stale_while_revalidate,
        "stale_if_error": stale_if_error,
    }
    for name, value in seconds.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise ConfigError(f"{name}: expected whole seconds >= 0 or None, got {value!r}")
    for name, flag in (("public", public), ("no_store", no_store)):
        if not isinstance(flag, bool):
            raise ConfigError(f"{name}: expected True or False, got {flag!r}")
    tag_list = _names("tags", tags, _TAG_RE, f"1-{MAX_TAG_LENGTH} visible ASCII characters")
    if len(tag_list) > MAX_TAGS:
        raise ConfigError(f"tags: at most {MAX_TAGS} tags, got {len(tag_list)}")
    if any(len(tag) > MAX_TAG_LENGTH for tag in tag_list):
        raise ConfigError(f"tags: a tag has 1-{MAX_TAG_LENGTH} characters")
    vary_list = _names("vary", vary, _FIELD_NAME_RE, "a header name")
    if "*" in vary_list:
        raise ConfigError("vary: '*' makes a response never match again; use no_store=True")
    given = [name for name, value in seconds.items() if value is not None]
    if no_store:
        if given or public:
            raise ConfigError(f"no_store: cannot go with {(given or ['public'])[0]}")
        cache_control: str | None = "no-store"
    else:
        parts = ["public"] if public else []
        parts += [f"{name.replace('_', '-')}={seconds[name]}" for name in given]
        cache_control = ", ".join(parts) or None
    if cache_control is None and not tag_list and not vary_list:
        raise ConfigError(
            "cache_headers: give at least one of max_age, s_maxage, public, no_store, tags, vary"
        )
    return CacheHeaders(cache_control, tuple(tag_list), tuple(vary_list))


def _names(argument: str, values: Iterable[str], pattern: re.Pattern[str], what: str) -> list[str]:
    if isinstance(values, (str, bytes)):
        raise ConfigError(f"{argument}: expected a list of strings, not one string {values!r}")
    try:
        items = list(values)
    except TypeError:
        raise ConfigError(f"{argument}: expected a list of strings, got {values!r}") from None
    for item in items:
        if not isinstance(item, str) or not pattern.match(item):
            raise ConfigError(f"{argument}: {item!r} is not {what}")
    return list(dict.fromkeys(items))
