"""The web console: a softphone page that calls voxray over WebRTC (plain HTML/JS, no build step).

Served by the ingress at `GET /console`; the files ship as package data.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response

router = APIRouter()

# Only these files are served: a fixed table, so no path from a request reaches the disk.
_FILES = {"console.js": "text/javascript", "console.css": "text/css"}


def _read(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


@router.get("/console", response_class=HTMLResponse, include_in_schema=False)
async def console_page() -> HTMLResponse:
    return HTMLResponse(_read("index.html"), headers={"Cache-Control": "no-cache"})


@router.get("/console/{name}", include_in_schema=False)
async def console_asset(name: str) -> Response:
    media_type = _FILES.get(name)
    if media_type is None:
        raise HTTPException(status_code=404, detail=f"no console file '{name}'")
    return Response(_read(name), media_type=media_type, headers={"Cache-Control": "no-cache"})
