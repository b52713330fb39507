"""The ASGI type aliases used across the package."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Raw HTTP headers as ASGI carries them: ``(name, value)`` byte pairs, names lowercase.
RawHeaders = list[tuple[bytes, bytes]]
