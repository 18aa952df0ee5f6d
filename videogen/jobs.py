"""Video jobs: what was asked, what will be made, and how far it has got.

A request names its video loosely (`seconds`, `fps`, `num_frames`, `size`);
Wan makes only frame counts of 4k+1 and sizes in multiples of 16, so
`resolve_params` rounds to the nearest valid value and the job reports what
was used, and refuses what cannot be honoured with the field named. A job
record (`VideoJob`) is the whole state of a job: it is stored beside the
video, so whichever frontend reads it answers the same, and it renders as
OpenAI's `video` object.
"""

from __future__ import annotations

import math
import re
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

JobStatus = Literal["queued", "in_progress", "completed", "failed"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed"})
JOB_ID = re.compile(r"video_[0-9a-f]{32}")
_SIZE = re.compile(r"\s*(\d+)\s*[xX]\s*(\d+)\s*")


class VideoRequestError(ValueError):
    """A request that cannot be honoured: the field, and the HTTP status it deserves."""

    def __init__(self, message: str, param: str, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.status = status


class Defaults(BaseModel):
    """What a request leaves out, and how far it may go (from the worker's config)."""

    default_size: str = "832x480"
    default_fps: int = 16
    default_num_frames: int = 81
    default_steps: int = 50
    default_guidance_scale: float = 5.0
    max_steps: int = 100
    max_pixel_frames: int = 1280 * 720 * 81
    """Largest width x height x frames; above it a request is a 413."""


class GenerationParams(BaseModel):
    """Exactly what the pipeline runs: every value valid for Wan, nothing left to defaults."""

    prompt: str
    negative_prompt: str | None = None
    width: int
    height: int
    num_frames: int
    fps: int
    num_inference_steps: int
    guidance_scale: float
    seed: int

    @property
    def seconds(self) -> str:
        """The clip's length as OpenAI spells it (a string), e.g. "5.06"."""
        return f"{self.num_frames / self.fps:.4g}"


class JobError(BaseModel):
    code: str
    message: str


class WorkerRef(BaseModel):
    """The process running a job: the frontend fails the job if this process is gone."""

    host: str
    pid: int


class VideoJob(BaseModel):
    id: str
    model: str
    status: JobStatus = "queued"
    progress: int = 0
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    params: GenerationParams
    error: JobError | None = None
    worker: WorkerRef | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def fail(self, code: str, message: str) -> None:
        self.status = "failed"
        self.error = JobError(code=code, message=message)
        self.completed_at = int(time.time())

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's `video` object, plus the parameters actually used (rounded, seeded)."""
        p = self.params
        return {
            "id": self.id,
            "object": "video",
            "model": self.model,
            "status": self.status,
            "progress": self.progress,
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "expires_at": self.expires_at,
            "seconds": p.seconds,
            "size": f"{p.width}x{p.height}",
            "prompt": p.prompt,
            "error": self.error.model_dump() if self.error else None,
            "remixed_from_video_id": None,
            "num_frames": p.num_frames,
            "fps": p.fps,
            "num_inference_steps": p.num_inference_steps,
            "guidance_scale": p.guidance_scale,
            "seed": p.seed,
        }


class VideoRequest(BaseModel):
    """The generation fields both APIs share, as loosely as clients send them."""

    prompt: str = Field(min_length=1)
    negative_prompt: str | None = None
    seconds: float | None = None
    fps: int | None = None
    num_frames: int | None = None
    size: str | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None


class VideoSubmit(BaseModel):
    """Frontend -> worker: make this job (the id is the frontend's, so it can answer at once)."""

    job_id: str
    model: str
    request: VideoRequest
    image: bytes | None = None


def new_job_id() -> str:
    return f"video_{uuid.uuid4().hex}"


def resolve_params(
    request: VideoRequest, defaults: Defaults, temporal: int = 4, spatial: int = 16
) -> GenerationParams:
    """The request's video in values Wan can make: `temporal`k+1 frames, sides of `spatial`.

    `num_frames` wins over `fps` x `seconds`; each is rounded to the nearest
    valid value (at least one step of it). Out of range is refused: 400 for a
    value that makes no sense, 413 for a video larger than the configured limit.
    """
    fps = defaults.default_fps if request.fps is None else request.fps
    if fps < 1:
        raise VideoRequestError(f"fps must be at least 1, got {fps}", "fps")
    if request.num_frames is not None:
        wanted, field = request.num_frames, "num_frames"
    elif request.seconds is not None:
        wanted, field = round(request.seconds * fps), "seconds"
    else:
        wanted, field = defaults.default_num_frames, "num_frames"
    if wanted < 1:
        raise VideoRequestError(f"{field} must give at least one frame, got {wanted}", field)
    num_frames = max(0, round((wanted - 1) / temporal)) * temporal + 1
    width, height = _parse_size(request.size or defaults.default_size, spatial)
    steps = request.num_inference_steps
    if steps is None:
        steps = defaults.default_steps
    if not 1 <= steps <= defaults.max_steps:
        raise VideoRequestError(
            f"num_inference_steps must be between 1 and {defaults.max_steps}, got {steps}",
            "num_inference_steps",
        )
    guidance = request.guidance_scale
    if guidance is None:
        guidance = defaults.default_guidance_scale
    if guidance < 0:
        raise VideoRequestError(f"guidance_scale must be >= 0, got {guidance}", "guidance_scale")
    if width * height * num_frames > defaults.max_pixel_frames:
        raise VideoRequestError(
            f"{width}x{height} x {num_frames} frames is over this server's limit of "
            f"{defaults.max_pixel_frames} pixels x frames; ask for a smaller size or fewer frames",
            "size" if request.size is not None else field,
            status=413,
        )
    seed = secrets.randbelow(2**31) if request.seed is None else request.seed
    if not 0 <= seed < 2**63:
        raise VideoRequestError(f"seed must be in [0, 2**63), got {seed}", "seed")
    return GenerationParams(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        width=width,
        height=height,
        num_frames=num_frames,
        fps=fps,
        num_inference_steps=steps,
        guidance_scale=guidance,
        seed=seed,
    )


def _parse_size(size: str, spatial: int) -> tuple[int, int]:
    found = _SIZE.fullmatch(size)
    if found is None:
        raise VideoRequestError(f"size must be WIDTHxHEIGHT (e.g. 832x480), got {size!r}", "size")
    width, height = (max(1, round(int(side) / spatial)) * spatial for side in found.groups())
    if int(found.group(1)) < 1 or int(found.group(2)) < 1:
        raise VideoRequestError(f"size must be at least 1x1, got {size!r}", "size")
    return width, height


class ProgressThrottle:
    """Which denoising steps' progress is worth publishing: at most one per `interval_s`.

    Each published value costs a record written to storage and sent to the
    callers who wait, which per step (or per percent) was a large share of a
    short job. The first step and the last are always published: a job is seen
    moving at once, and its record never lags behind the steps at the end.
    """

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.last = -math.inf

    def due(self, done: int, total: int) -> bool:
        now = self.clock()
        if done < total and now - self.last < self.interval_s:
            return False
        self.last = now
        return True
