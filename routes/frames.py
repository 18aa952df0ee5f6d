"""`POST /v1/frames/descriptions`: many frames in, one description each, in one request.

The story of a request here: check it (one source, at most
`frames-max-per-request` frames: a 413 above), admit it as one request, then
describe every frame as a one-image chat request through the same graph, as
many at once as the request's share of the frame budget allows
(`frame_budget`): encode workers embed them in parallel, decode workers batch
their generations. A frame that fails on its own (its fetch refused or failed,
not an image, too large) leaves `""` and its index in `failed_indices`; the
others go on. From a `video_url`, the frontend fetches the video itself
(SSRF-safe, its `frames-media` options), decodes the picked frames once
(`media.Stills`), each only when its turn comes, and sends each as a lossless
PNG `data:` URL, so the answer also carries each frame's `timestamps_s`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from media import MediaError, Stills, png
from protocol.apps import FramesRequest, FramesResponse
from protocol.errors import ServiceError
from routes.errors import ERROR_RESPONSES
from routes.generate import check_model, finish, processor_stream
from routes.state import FrontendState, frontend, serves

log = logging.getLogger(__name__)

router = APIRouter(tags=["frames"], dependencies=[Depends(serves("chat"))])

# (index, URL), or (index, None) for a frame that could not even be decoded.
Frames = AsyncIterator[tuple[int, str | None]]


@router.post(
    "/v1/frames/descriptions",
    response_model=FramesResponse,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
)
async def describe_frames(body: FramesRequest, request: Request) -> Response:
    state = frontend(request)
    request_id: str = request.state.request_id
    try:
        check_model(state, body.model or state.model_name)
        if body.frame_urls is not None:
            check_count(state, len(body.frame_urls))
        await state.admission.admit()
    except ServiceError as error:
        return finish(state, request_id, error)
    try:
        if body.frame_urls is not None:
            answer = await describe(state, body, request_id, listed(body.frame_urls))
        else:
            answer = await describe_video(state, body, request_id)
    except ServiceError as error:
        return finish(state, request_id, error)
    finally:
        state.admission.leave()
    state.metrics.answered(200)
    return JSONResponse(answer.model_dump(exclude_none=True), headers={"x-request-id": request_id})


def check_count(state: FrontendState, count: int) -> None:
    limit = state.frames.max_per_request
    if count > limit:
        raise ServiceError(
            f"the request has {count} frames, over this server's limit of {limit}; split it "
            "(server option: frames-max-per-request)",
            status=413,
            type="invalid_request_error",
            param="frame_urls",
            code="too_many_frames",
        )


async def listed(urls: list[str]) -> Frames:
    for item in enumerate(urls):
        yield item


async def describe_video(
    state: FrontendState, body: FramesRequest, request_id: str
) -> FramesResponse:
    assert body.video_url is not None
    settings = state.frames
    try:
        data = await settings.fetcher.fetch(body.video_url)
        stills = await asyncio.to_thread(
            Stills,
            data,
            fps=body.fps,
            timestamps=body.timestamps,
            keyframes=body.keyframes,
            max_frames=settings.max_per_request,
            max_duration_s=settings.media.max_duration_s,
        )
    except MediaError as error:
        raise ServiceError(
            str(error),
            status=error.status,
            type="invalid_request_error",
            param="video_url",
            code=error.rule,
        ) from None
    with stills:
        answer = await describe(
            state, body, request_id, decoded(stills.frames(), len(stills.picks))
        )
    answer.timestamps_s = stills.timestamps
    return answer


async def decoded(frames: Iterator[np.ndarray | None], count: int) -> Frames:
    """Each frame as a PNG `data:` URL, decoded and encoded off the event loop when asked for."""

    def next_url() -> str | None:
        frame = next(frames)
        if frame is None:
            return None
        return "data:image/png;base64," + base64.b64encode(png(frame)).decode()

    for index in range(count):
        yield index, await asyncio.to_thread(next_url)


async def describe(
    state: FrontendState, body: FramesRequest, request_id: str, frames: Frames
) -> FramesResponse:
    """Describe every frame, at most the request's share of the budget at once."""
    descriptions: dict[int, str] = {}
    failed: list[int] = []
    budget = state.frames.budget
    taking = asyncio.Lock()

    async def worker(key: object) -> None:
        while True:
            async with budget.frame(key):
                async with taking:
                    item = await anext(frames, None)
                if item is None:
                    return
                index, url = item
                text = (
                    None if url is None else await describe_one(state, body, request_id, index, url)
                )
                if text is None:
                    failed.append(index)
                else:
                    descriptions[index] = text

    async with budget.request() as key:
        await asyncio.gather(*(worker(key) for _ in range(budget.limit)))
    count = len(descriptions) + len(failed)
    return FramesResponse(
        descriptions=[descriptions.get(i, "") for i in range(count)],
        failed_indices=sorted(failed),
        count=len(descriptions),
    )


async def describe_one(
    state: FrontendState, body: FramesRequest, request_id: str, index: int, url: str
) -> str | None:
    """One frame's description, or None when this frame failed (logged, never raised)."""
    chat = {
        "model": state.model_name,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": body.prompt},
                ],
            }
        ],
        "max_tokens": body.max_tokens or state.frames.max_tokens,
        "temperature": 0.0 if body.temperature is None else body.temperature,
    }
    outputs = processor_stream(state, "chat", chat, f"{request_id}-{index}")
    try:
        async with aclosing(outputs):
            return "".join([out.text async for out in outputs])
    except ServiceError as error:
        log.info("frame %d of %s failed: %s", index, request_id, error.message)
        return None
