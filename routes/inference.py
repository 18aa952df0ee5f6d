"""`POST /v1/inference/url` and `/v1/inference/upload`: a video and a prompt in, the answer out.

The story of a request here: the body (JSON, or a multipart upload streamed
to a temporary file and probed as a video) becomes the chat request a client
would have sent, one user turn with the video then the prompt, sampled with
the app defaults where the request is silent. It takes the same trip through
the graph as chat (`generate`), with `report_stages` set, so the answer comes
with what the frontend saw on the way: each stage's start (`queued`,
`fetching`, `decoding`, `encoding`, `generating`), the video's properties as
the encode worker found them, and timings. With `stream: true` those arrive as
SSE `status` events, then `delta` events with the text, then one `done` event
carrying the whole response; an error after the stream began is an `error`
event. An uploaded file is deleted when the response ends, however it ends.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import get_args

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from media import MediaError, probe_video
from protocol.apps import (
    DeltaEvent,
    ErrorEvent,
    InferenceRequest,
    InferenceResponse,
    InferenceTimings,
    StatusEvent,
    UploadForm,
)
from protocol.errors import ServiceError
from protocol.messages import ProcessorOutput, Stage, VideoInfo
from protocol.openai import ChatCompletionRequest, Usage
from routes.errors import ERROR_RESPONSES, error_body
from routes.generate import (
    ClosingStream,
    Outputs,
    check_model,
    finish,
    release,
    start_generation,
)
from routes.state import AppSettings, FrontendState, frontend, serves
from routes.uploads import receive_upload


def upload_schema() -> dict[str, object]:
    """The multipart body of the upload route, for the OpenAPI document."""
    schema = UploadForm.model_json_schema()
    schema["properties"] = {
        "video": {"type": "string", "format": "binary", "description": "the video file"},
        **schema["properties"],
    }
    schema["required"] = ["video", *schema.get("required", [])]
    schema["title"] = "Upload"
    return schema


router = APIRouter(tags=["inference"], dependencies=[Depends(serves("chat"))])

UPLOAD_PATH = "/v1/inference/upload"
STAGES: tuple[Stage, ...] = get_args(Stage)
_ANSWERS = {
    200: {"content": {"text/event-stream": {}}, "description": "the answer, or its SSE stream"},
    **ERROR_RESPONSES,
}


@router.post("/v1/inference/url", response_model=InferenceResponse, responses=_ANSWERS)
async def inference_url(body: InferenceRequest, request: Request) -> Response:
    state = frontend(request)
    try:
        return await answer(state, body, request.state.request_id)
    except ServiceError as error:
        return finish(state, request.state.request_id, error)


@router.post(
    UPLOAD_PATH,
    response_model=InferenceResponse,
    responses=_ANSWERS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": upload_schema()}},
        }
    },
)
async def inference_upload(request: Request) -> Response:
    state = frontend(request)
    request_id: str = request.state.request_id
    settings = state.apps
    try:
        upload = await receive_upload(request, settings.upload_dir, settings.max_upload_bytes)
    except ServiceError as error:
        return finish(state, request_id, error)
    try:
        form = parse_form(upload.fields)
        await asyncio.to_thread(check_video, upload.path)
        return await answer(
            state, form.with_video(upload.path.as_uri()), request_id, on_close=upload.delete
        )
    except ServiceError as error:
        upload.delete()
        return finish(state, request_id, error)
    except BaseException:
        upload.delete()
        raise


def parse_form(fields: dict[str, str]) -> UploadForm:
    """The upload's text fields, typed; an unknown or malformed field is a 400 naming it."""
    try:
        return UploadForm.model_validate(fields)
    except ValidationError as error:
        first = error.errors()[0]
        name = ".".join(str(part) for part in first["loc"])
        allowed = ", ".join(["video", *UploadForm.model_fields])
        raise ServiceError(
            f"form field `{name}`: {first['msg']} (fields: {allowed})",
            status=400,
            type="invalid_request_error",
            param=name,
        ) from None


def check_video(path: object) -> None:
    """Refuse an upload that is not a video, whatever its name or content type says."""
    try:
        probe_video(path)  # type: ignore[arg-type]
    except MediaError as error:
        raise ServiceError(
            f"the upload is not a usable video: {error.message}",
            status=400,
            type="invalid_request_error",
            param="video",
            code=error.rule,
        ) from None


def chat_request(
    body: InferenceRequest, settings: AppSettings, model: str
) -> ChatCompletionRequest:
    """The chat request a client would send for this: the video, then the prompt."""
    video = body.video_params.model_dump(exclude_none=True)
    video.setdefault("fps", settings.fps)
    video.setdefault("max_frames", settings.max_frames)
    generation = body.generation_params
    return ChatCompletionRequest.model_validate(
        {
            "model": model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "video_url", "video_url": {"url": body.video_url}},
                        {"type": "text", "text": body.prompt},
                    ],
                }
            ],
            "max_tokens": generation.max_tokens or settings.max_tokens,
            "temperature": settings.temperature
            if generation.temperature is None
            else generation.temperature,
            "top_p": generation.top_p,
            "seed": generation.seed,
            "media_io_kwargs": {"video": video},
        }
    )


async def answer(
    state: FrontendState,
    body: InferenceRequest,
    request_id: str,
    on_close: Callable[[], None] | None = None,
) -> Response:
    """Run the request through the graph; the response (or its stream's end) calls `on_close`."""
    seen = Progress()
    check_model(state, body.model or state.model_name)
    chat = chat_request(body, state.apps, state.model_name)
    first, rest = await start_generation(state, chat.model_dump(), request_id, report_stages=True)
    if body.stream:

        async def close() -> None:
            await release(state, rest)
            if on_close is not None:
                on_close()

        return ClosingStream(stream_events(state, seen, first, rest), on_close=close)
    try:
        out = first
        while True:
            seen.observe(out)
            if out.finish_reason is not None:
                break
            out = await anext(rest)
        state.metrics.answered(200)
        response = seen.response(state.model_name, out)
        return JSONResponse(response.model_dump(), headers={"x-request-id": request_id})
    finally:
        await release(state, rest)
        if on_close is not None:
            on_close()


class Progress:
    """What the frontend saw of one request: when each stage began, the video, the answer."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.stage_times: dict[Stage, float] = {"queued": self.started}
        self.first_token: float | None = None
        self.video: VideoInfo | None = None
        self.text: list[str] = []

    @property
    def stage(self) -> Stage:
        return max(self.stage_times, key=STAGES.index)

    def observe(self, out: ProcessorOutput) -> Stage | None:
        """Take in one output; return the stage it entered, if it entered a later one."""
        if out.stage is not None:
            self.video = out.stage.video or self.video
            return self._enter(out.stage.stage)
        entered = self._enter("generating") if out.token_ids else None
        if out.token_ids and self.first_token is None:
            self.first_token = time.perf_counter()
        self.text.append(out.text)
        return entered

    def _enter(self, stage: Stage) -> Stage | None:
        if STAGES.index(stage) <= STAGES.index(self.stage):
            return None
        self.stage_times[stage] = time.perf_counter()
        return stage

    def timings(self) -> InferenceTimings:
        """Each span from its stage's start to the next seen; a skipped stage spans 0 s."""
        now = time.perf_counter()
        first_token = self.first_token or now
        starts = [self.stage_times.get(stage) for stage in STAGES] + [first_token]
        for i in range(len(starts) - 2, -1, -1):
            starts[i] = starts[i] if starts[i] is not None else starts[i + 1]
        queued, fetching, _, encoding, generating, _ = starts
        return InferenceTimings(
            queue_s=fetching - queued,
            media_s=encoding - fetching,
            encode_s=generating - encoding,
            ttft_s=first_token - self.started,
            total_s=now - self.started,
        )

    def response(self, model: str, last: ProcessorOutput) -> InferenceResponse:
        assert last.finish_reason is not None
        return InferenceResponse(
            id=f"inf-{uuid.uuid4().hex}",
            model=model,
            text="".join(self.text),
            finish_reason=last.finish_reason,
            usage=Usage(
                prompt_tokens=last.prompt_tokens,
                completion_tokens=last.completion_tokens,
                total_tokens=last.prompt_tokens + last.completion_tokens,
            ),
            video=self.video,
            timings=self.timings(),
        )


def sse(name: str, payload: BaseModel) -> str:
    return f"event: {name}\ndata: {payload.model_dump_json()}\n\n"


async def stream_events(
    state: FrontendState, seen: Progress, first: ProcessorOutput, rest: Outputs
) -> AsyncIterator[str]:
    """`status` events as stages begin, `delta` events with text, then `done` (or `error`)."""
    status = "200"
    try:
        yield sse("status", StatusEvent(stage="queued"))
        out = first
        while True:
            entered = seen.observe(out)
            if entered is not None:
                yield sse("status", StatusEvent(stage=entered))
            if out.stage is None and out.text:
                yield sse("delta", DeltaEvent(text=out.text))
            if out.finish_reason is not None:
                break
            out = await anext(rest)
        yield sse("done", seen.response(state.model_name, out))
    except ServiceError as error:
        status = str(error.status)
        yield sse("error", ErrorEvent(status=error.status, error=error_body(error).error))
    except asyncio.CancelledError:
        status = "499"
        raise
    finally:
        state.metrics.answered(status)
