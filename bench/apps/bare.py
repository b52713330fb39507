"""Floor ``bare``: a bare ASGI callable that sends the same pre-built bytes for any path.

The most a Python ASGI app can do on this server: two ``send`` calls and nothing else.
"""

from __future__ import annotations

import json
from typing import Any

from ._common import CONSTANT_BODY, calls_payload

_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(CONSTANT_BODY)).encode()),
]
_START = {"type": "http.response.start", "status": 200, "headers": _HEADERS}
_BODY = {"type": "http.response.body", "body": CONSTANT_BODY}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/__bench/calls":
        body = json.dumps(calls_payload()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    await send(_START)
    await send(_BODY)
