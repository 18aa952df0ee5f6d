"""What operators and load balancers call: `/live`, `/health`, `/metrics` (no API key)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from routes.state import frontend

router = APIRouter(tags=["operations"])


@router.get("/live")
async def live() -> dict[str, str]:
    return {"status": "live"}


@router.get("/health", responses={503: {"description": "not every component is live"}})
async def health(request: Request) -> JSONResponse:
    state = frontend(request)
    instances = await state.graph_instances()
    status = "ready" if all(instances.values()) else "unavailable"
    if state.admission.draining:
        status = "draining"
    return JSONResponse(
        {"status": status, "instances": instances},
        status_code=200 if status == "ready" else 503,
    )


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    state = frontend(request)
    body, content_type = state.metrics.render(await state.worker_stats(), state.admission.queued)
    return Response(body, media_type=content_type)
