"""`GET /`: a page to try the graph in a browser — a video and a prompt in, the answer streaming.

Plain HTML, CSS and JavaScript shipped as package data (`routes/static/`): no
build step, nothing fetched from a CDN. The page calls `/v1/inference/upload`
or `/url` with `stream: true` and shows the SSE stream; an API key, when the
server needs one, is typed into the page and sent as `Authorization`.
"""

from __future__ import annotations

from importlib import resources
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

router = APIRouter(tags=["page"], include_in_schema=False)

_STATIC = resources.files("routes") / "static"
_ASSETS = {"page.css": "text/css", "page.js": "text/javascript"}


@router.get("/", response_class=HTMLResponse)
async def page() -> HTMLResponse:
    return HTMLResponse((_STATIC / "index.html").read_text(), headers={"cache-control": "no-cache"})


@router.get("/assets/{name}")
async def asset(name: Literal["page.css", "page.js"]) -> Response:
    return Response(
        (_STATIC / name).read_text(),
        media_type=_ASSETS[name],
        headers={"cache-control": "no-cache"},
    )
