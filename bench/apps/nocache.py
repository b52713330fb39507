"""Variant ``nocache``: FastAPI, no cache at all; every request waits for the upstream."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from ._common import calls_payload, upstream

app = FastAPI()


@app.get("/items/{item_id}")
async def item(item_id: int, q: str | None = None) -> dict[str, object]:
    return await upstream(item_id, q)


@app.get("/__bench/calls")
async def calls() -> JSONResponse:
    return JSONResponse(calls_payload(), headers={"cache-control": "no-store"})
