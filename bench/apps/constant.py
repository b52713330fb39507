"""Floor ``constant``: a FastAPI route that returns pre-built bytes; no upstream, no cache.

What FastAPI costs when the answer is already at hand: a cache that sits in front of the
router and answers hits without it should beat this.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from ._common import CONSTANT_BODY, calls_payload

app = FastAPI()


@app.get("/items/{item_id}")
async def item(item_id: int, q: str | None = None) -> Response:
    return Response(content=CONSTANT_BODY, media_type="application/json")


@app.get("/__bench/calls")
async def calls() -> JSONResponse:
    return JSONResponse(calls_payload(), headers={"cache-control": "no-store"})
