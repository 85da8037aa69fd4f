"""Call records over the HTTP API: a record is written as its call ends, so tests poll for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx


async def call_record(server: str, call_id: str, *, token: str | None = None,
                      ready: Callable[[dict], bool] = lambda rec: True,
                      timeout_s: float = 10.0, interval_s: float = 0.2) -> dict | None:
    """`GET /call/records?id=` at `server` ("host:port/prefix") until the call's record is
    there and `ready` holds for it; None if it is not within `timeout_s`."""
    params = {"id": call_id, **({"token": token} if token else {})}
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=f"http://{server}", timeout=10) as http:
        while True:
            recs = (await http.get("call/records", params=params)).json()["records"]
            if recs and ready(recs[0]):
                return recs[0]
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(interval_s)
