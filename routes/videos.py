"""Video generation: OpenAI's job API on `/v1/videos`, Dynamo's synchronous one beside it.

    POST   /v1/videos                   a job (multipart form, as the openai client sends, or JSON)
    GET    /v1/videos                   the jobs, a cursor page (`after`, `limit`, `order`)
    GET    /v1/videos/{id}              one job: status and real progress (steps done / total)
    DELETE /v1/videos/{id}              cancel it wherever it is queued or running, and delete it
    GET    /v1/videos/{id}/content      the MP4 (`variant=thumbnail`: a WebP still)
    POST   /v1/videos/generations       prompt in, finished video out (`url` or `b64_json`)

The routes answer only where the graph runs a `videos` model; the models and
where their videos are stored come from the workers' cards in etcd.
"""

from __future__ import annotations

import base64
import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ConfigDict, ValidationError
from starlette.datastructures import UploadFile

from protocol.errors import ServiceError
from routes.errors import ERROR_RESPONSES
from routes.state import frontend, serves
from routes.video_jobs import VIDEOS, VideoJobs
from videogen import VideoRequest
from videogen.mp4 import MP4_TYPE, THUMBNAIL_TYPE

router = APIRouter(
    tags=["videos"], dependencies=[Depends(serves(VIDEOS))], responses=ERROR_RESPONSES
)

# How long the openai client's `poll()` waits between retrievals (it reads this header).
POLL_AFTER_MS = "250"


class VideoCreateBody(VideoRequest):
    """`POST /v1/videos`: OpenAI's fields, plus the generation knobs as extra fields."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    input_reference: bytes | None = None


class VideoGenerationsBody(VideoRequest):
    """`POST /v1/videos/generations`, as Dynamo's video endpoint takes it."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    response_format: Literal["url", "b64_json"] = "url"
    user: str | None = None


def video_jobs(request: Request) -> VideoJobs:
    """The app's one `VideoJobs`, made on first use."""
    app_state = request.app.state
    if not hasattr(app_state, "video_jobs"):
        app_state.video_jobs = VideoJobs(frontend(request))
    return app_state.video_jobs


@router.post("/v1/videos")
async def create_video(request: Request) -> JSONResponse:
    body = await _create_body(request)
    jobs = video_jobs(request)
    job, stream = await jobs.submit(
        jobs.model(body.model), _generation_fields(body), body.input_reference
    )
    jobs.follow_in_background(job, stream)
    return JSONResponse(job.to_openai(), headers={"openai-poll-after-ms": POLL_AFTER_MS})


@router.get("/v1/videos")
async def list_videos(
    request: Request,
    after: str | None = None,
    limit: int = Query(default=20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
) -> JSONResponse:
    return JSONResponse(await video_jobs(request).list(after, limit, order))


@router.get("/v1/videos/{video_id}")
async def retrieve_video(video_id: str, request: Request) -> JSONResponse:
    job = await video_jobs(request).get(video_id)
    return JSONResponse(job.to_openai(), headers={"openai-poll-after-ms": POLL_AFTER_MS})


@router.delete("/v1/videos/{video_id}")
async def delete_video(video_id: str, request: Request) -> JSONResponse:
    return JSONResponse(await video_jobs(request).delete(video_id))


@router.get(
    "/v1/videos/{video_id}/content",
    response_class=Response,
    responses={200: {"content": {MP4_TYPE: {}, THUMBNAIL_TYPE: {}}}},
)
async def download_video(
    video_id: str, request: Request, variant: Literal["video", "thumbnail"] = "video"
) -> Response:
    data = await video_jobs(request).content(video_id, variant)
    return Response(data, media_type=MP4_TYPE if variant == "video" else THUMBNAIL_TYPE)


@router.post("/v1/videos/generations")
async def generate_video(body: VideoGenerationsBody, request: Request) -> JSONResponse:
    state, jobs = frontend(request), video_jobs(request)
    started = time.perf_counter()
    await state.admission.admit()
    try:
        job, stream = await jobs.submit(jobs.model(body.model), _generation_fields(body), None)
        job = await jobs.wait(job, stream)
        if job.status != "completed":
            error = job.error
            raise ServiceError(
                f"the video could not be made: {error.message if error else 'unknown error'}",
                code=error.code if error else None,
            )
        if body.response_format == "b64_json":
            item = {"b64_json": base64.b64encode(await jobs.content(job.id, "video")).decode()}
        else:
            item = {"url": str(request.url_for("download_video", video_id=job.id))}
    finally:
        state.admission.leave()
    return JSONResponse(
        {
            "id": job.id,
            "object": "video",
            "model": job.model,
            "status": job.status,
            "progress": job.progress,
            "created": job.created_at,
            "data": [item],
            "inference_time_s": round(time.perf_counter() - started, 3),
        }
    )


async def _create_body(request: Request) -> VideoCreateBody:
    """The create request from a multipart/urlencoded form or a JSON object; 400s name the field."""
    content_type = request.headers.get("content-type", "")
    fields: dict[str, Any]
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()
        fields = {}
        for key, value in form.multi_items():
            fields[key] = await value.read() if isinstance(value, UploadFile) else value
    else:
        try:
            fields = await request.json()
        except ValueError:
            raise _invalid("body", "the body must be a JSON object or a multipart form") from None
        if not isinstance(fields, dict):
            raise _invalid("body", "the body must be a JSON object or a multipart form")
        if "input_reference" in fields:
            raise _invalid("input_reference", "send input_reference as a file in a multipart form")
    try:
        return VideoCreateBody.model_validate(fields)
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or "body"
        raise _invalid(param, f"{param}: {first['msg']}") from None


def _generation_fields(body: VideoRequest) -> VideoRequest:
    return VideoRequest.model_validate(body.model_dump(include=set(VideoRequest.model_fields)))


def _invalid(param: str, message: str) -> ServiceError:
    return ServiceError(message, status=400, type="invalid_request_error", param=param)
