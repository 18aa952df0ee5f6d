"""The app surface: "video + prompt in, answer out", and per-frame descriptions in bulk.

Unlike the OpenAI surface, these bodies are ours, so they are strict: an
unknown field is a 400 naming it, not silently dropped, because a misspelt
`max_token` that is ignored costs a user an afternoon.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from protocol.messages import FinishReason, Stage, VideoInfo
from protocol.openai import ErrorInfo, Usage


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VideoParams(_Strict):
    """How to sample the video; unset fields take the server's defaults (`inference-*`)."""

    fps: PositiveFloat | None = None
    min_frames: PositiveInt | None = None
    max_frames: PositiveInt | None = None
    min_pixels: PositiveInt | None = None
    max_pixels: PositiveInt | None = None
    total_pixels: PositiveInt | None = None


class GenerationParams(_Strict):
    """How to sample the answer; unset fields take the server's defaults (`inference-*`)."""

    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None


class InferenceRequest(_Strict):
    """`POST /v1/inference/url`; an upload is turned into one of these with a local URL."""

    video_url: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    model: str | None = None
    video_params: VideoParams = VideoParams()
    generation_params: GenerationParams = GenerationParams()
    stream: bool = False


class UploadForm(VideoParams, GenerationParams):
    """`POST /v1/inference/upload`: the form fields beside the `video` file, flat."""

    prompt: str = Field(min_length=1)
    model: str | None = None
    stream: bool = False

    def with_video(self, video_url: str) -> InferenceRequest:
        return InferenceRequest(
            video_url=video_url,
            prompt=self.prompt,
            model=self.model,
            video_params=VideoParams(**self.model_dump(include=set(VideoParams.model_fields))),
            generation_params=GenerationParams(
                **self.model_dump(include=set(GenerationParams.model_fields))
            ),
            stream=self.stream,
        )


class InferenceTimings(BaseModel):
    """Seconds, from the frontend's clock: waiting, fetch + decode, vision encoder, first token."""

    queue_s: float
    media_s: float
    encode_s: float
    ttft_s: float
    total_s: float


class InferenceResponse(BaseModel):
    id: str
    model: str
    text: str
    finish_reason: FinishReason
    usage: Usage
    video: VideoInfo | None
    timings: InferenceTimings


class StatusEvent(BaseModel):
    """SSE `event: status`: the request has entered `stage`."""

    stage: Stage


class DeltaEvent(BaseModel):
    """SSE `event: delta`: the next piece of the answer."""

    text: str


class ErrorEvent(BaseModel):
    """SSE `event: error`: the request failed after the stream began; nothing follows."""

    status: int
    error: ErrorInfo


DEFAULT_FRAME_PROMPT = (
    "Describe the production elements of this frame: the camera angle and framing, any visual "
    "effects, the colour grading and lighting, the composition, any text overlays, and the "
    "background."
)


class FramesRequest(_Strict):
    """`POST /v1/frames/descriptions`: frames by URL, or a video and which of its frames.

    A video's frames are picked by exactly one of `fps`, `timestamps` (seconds
    from the first frame) or `keyframes: true`, decoded once, and described
    like frames sent by URL; the answer then carries `timestamps_s`.
    """

    frame_urls: list[str] | None = Field(default=None, min_length=1)
    video_url: str | None = Field(default=None, min_length=1)
    fps: PositiveFloat | None = None
    timestamps: list[NonNegativeFloat] | None = Field(default=None, min_length=1)
    keyframes: bool = False
    prompt: str = Field(default=DEFAULT_FRAME_PROMPT, min_length=1)
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)

    @model_validator(mode="after")
    def _one_source(self) -> FramesRequest:
        if (self.frame_urls is None) == (self.video_url is None):
            raise ValueError(
                "send either frame_urls or video_url (with fps, timestamps or keyframes)"
            )
        picks = [self.fps is not None, self.timestamps is not None, self.keyframes]
        if self.video_url is not None and sum(picks) != 1:
            raise ValueError("with video_url, send exactly one of fps, timestamps, keyframes: true")
        if self.frame_urls is not None and any(picks):
            raise ValueError("fps, timestamps and keyframes pick frames of a video_url only")
        return self


class FramesResponse(BaseModel):
    """`descriptions` aligned with the frames ("" where one failed); `count` the described."""

    descriptions: list[str]
    failed_indices: list[int]
    count: int
    timestamps_s: list[float] | None = None
    """The video form only: each frame's time, seconds from the first frame."""


class HealthStatus(BaseModel):
    status: Literal["ok", "unavailable", "draining"]


class WorkerHealth(BaseModel):
    """One worker process as its stats report it; device fields only for model workers."""

    id: str
    address: str
    pid: int
    uptime_s: float
    queue_depth: int | None
    capacity: int | None = None
    """The requests it runs at once, as it registered (a decode worker: its max-num-seqs)."""
    model: str | None = None
    device: str | None = None
    gpu_name: str | None = None
    gpu_memory_used_bytes: int | None = None
    gpu_memory_total_bytes: int | None = None


class HealthDetailed(BaseModel):
    status: Literal["ok", "unavailable", "draining"]
    version: str
    uptime_s: float
    model: str
    max_inflight: int
    """This frontend's admission limit now: its `max-inflight`, else the workers' capacities."""
    max_queued: int
    components: dict[str, list[WorkerHealth]]
