"""`GET /v1/health` and `/v1/health/detailed`: can the graph serve, and what is it made of.

`/v1/health` is the one-line answer an app polls (`ok`, or 503). The detailed
form lists every component's live instances with their uptime, queue depth
(requests this frontend has in flight to them), the capacity they registered
and, for model workers, the model and device they report in their stats (GPU
name and memory on CUDA), beside the admission limits in force.
"""

from __future__ import annotations

import time
from importlib import metadata
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from protocol.apps import HealthDetailed, HealthStatus, WorkerHealth
from routes.state import FrontendState, frontend

router = APIRouter(tags=["health"])

_UNAVAILABLE = {503: {"model": HealthStatus, "description": "the graph cannot serve now"}}


def graph_status(state: FrontendState) -> str:
    if state.admission.draining:
        return "draining"
    return "ok" if all(c.instances() for c in state.components.values()) else "unavailable"


@router.get("/v1/health", response_model=HealthStatus, responses=_UNAVAILABLE)
async def health(request: Request) -> JSONResponse:
    status = graph_status(frontend(request))
    return JSONResponse({"status": status}, status_code=200 if status == "ok" else 503)


@router.get("/v1/health/detailed", response_model=HealthDetailed, responses=_UNAVAILABLE)
async def health_detailed(request: Request) -> JSONResponse:
    state = frontend(request)
    stats = await state.worker_stats()
    now = time.time()
    components = {
        name: [
            worker_health(instance, stats.get(name, {}).get(instance.instance_id, {}), now)
            for instance in sorted(client.instances(), key=lambda i: i.instance_id)
        ]
        for name, client in state.components.items()
    }
    status = graph_status(state)
    body = HealthDetailed(
        status=status,  # type: ignore[arg-type]
        version=version(),
        uptime_s=now - state.started_at,
        model=state.model_name,
        max_inflight=state.admission.max_inflight,
        max_queued=state.admission.max_queued,
        components=components,
    )
    return JSONResponse(body.model_dump(), status_code=200 if status == "ok" else 503)


DEVICE_STATS = ("model", "device", "gpu_name", "gpu_memory_used_bytes", "gpu_memory_total_bytes")


def worker_health(instance: Any, stats: dict[str, Any], now: float) -> WorkerHealth:
    """One `runtime.Instance` with what its stats say about it."""
    inflight = stats.get("inflight")
    return WorkerHealth(
        id=instance.instance_id,
        address=instance.address,
        pid=instance.pid,
        uptime_s=now - instance.started_at,
        queue_depth=int(inflight) if isinstance(inflight, int | float) else None,
        capacity=instance.capacity,
        **{key: stats[key] for key in DEVICE_STATS if key in stats},
    )


def version() -> str:
    try:
        return metadata.version("vidgraph")
    except metadata.PackageNotFoundError:
        return "unknown"
