"""The request mix: fresh videos, repeated videos, images and text, reproducible by seed.

Request `i` of a run is a pure function of (seed, i), so two systems driven with
the same flags receive the same prompts and the same video bytes in the same
order. "repeat" requests reuse the exact bytes of a small pool of hot videos, which
is what an embedding cache keyed by content hash can hit; "video" requests each
get a video nobody has sent before. Videos are made locally (no media can be
downloaded here) and sent inline as `data:` URLs, so any server accepts them
without a file allow-list. With `turns` > 1, consecutive requests are the turns
of one conversation about the same video (its earlier questions and fixed
answers sent again), which a prefix cache and an embedding cache can reuse.
"""

from __future__ import annotations

import base64
import io
import json
import tempfile
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from media.samples import sample_frames, write_sample_video

KINDS = ("video", "repeat", "text", "image")
MEASURED, WARMUP, CROSSCHECK = 0, 1, 2  # request streams, see `Workload.request`
VIDEO_PROMPTS = (
    "Describe this video.",
    "What happens in this video, step by step?",
    "Which colours move in this clip, and in which direction?",
)
TEXT_PROMPTS = (
    "Write a short poem about the sea.",
    "Explain what a video codec does in two sentences.",
    "List three uses of a load balancer.",
)
IMAGE_PROMPT = "What is in this picture?"
FOLLOW_UPS = (
    "What colour dominates at the end?",
    "Does anything move left to right?",
    "Summarise it in five words.",
)
EARLIER_ANSWER = "A gradient of colours drifts slowly across the frame."


@dataclass(frozen=True)
class WorkloadSpec:
    """Shares of each request kind (they sum to 1) and the shape of the videos."""

    video_share: float = 1.0
    repeat_share: float = 0.0
    text_share: float = 0.0
    image_share: float = 0.0
    video_seconds: tuple[float, ...] = (1.0, 2.0, 4.0)
    fps: int = 10
    width: int = 96
    height: int = 64
    repeat_pool: int = 4
    max_tokens: int = 32
    seed: int = 0
    turns: int = 1
    num_frames: int | None = None  # sent as media_io_kwargs; None: the server's default

    def __post_init__(self) -> None:
        shares = (self.video_share, self.repeat_share, self.text_share, self.image_share)
        if min(shares) < 0 or abs(sum(shares) - 1) > 1e-6:
            raise ValueError(
                "--video-share + --repeat-share + --text-share + --image-share must be "
                f"non-negative and sum to 1 (got {' + '.join(map(str, shares))})"
            )
        if not 1 <= self.turns <= len(FOLLOW_UPS) + 1:
            raise ValueError(f"--turns must be between 1 and {len(FOLLOW_UPS) + 1}")
        if not self.video_seconds or min(self.video_seconds) <= 0:
            raise ValueError("--video-seconds needs one or more positive lengths")
        if self.repeat_pool < 1:
            raise ValueError("--repeat-pool must be at least 1")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Request:
    """One request of the mix: its kind, prompt, and which video (seed, length) it carries."""

    index: int
    kind: str
    prompt: str
    video_seed: int | None = None
    video_seconds: float | None = None
    turn: int = 0


@dataclass(frozen=True)
class PreparedRequest:
    """A request serialized once before the clock starts, so sending it costs no client CPU."""

    kind: str
    payload: bytes


class Workload:
    """Draws requests from a `WorkloadSpec` and turns them into chat-completion bodies."""

    def __init__(self, spec: WorkloadSpec) -> None:
        self.spec = spec
        self._video_url = cache(self._make_video_url)
        self._image_url = cache(self._make_image_url)

    def request(self, index: int, stream: int = MEASURED) -> Request:
        """Request `index` of a stream of requests.

        Kind, prompt and video length depend on (seed, index) only; the bytes of a
        fresh video also depend on `stream`. So the warm-up and the cross-check
        streams follow the measured mix request for request without ever sending
        a fresh video the measured stream sends (which would be a cache hit).
        """
        spec = self.spec
        # Every turn of a conversation draws the same kind, prompt and video.
        conversation, turn = divmod(index, spec.turns)
        rng = np.random.default_rng([spec.seed, conversation])
        shares = [spec.video_share, spec.repeat_share, spec.text_share, spec.image_share]
        kind = str(rng.choice(KINDS, p=shares))
        if kind == "text":
            return Request(index, kind, str(rng.choice(TEXT_PROMPTS)), turn=turn)
        # Fresh media take seeds above the hot pool's, so they never collide with it.
        fresh = spec.repeat_pool + int(
            np.random.default_rng([spec.seed, conversation, stream]).integers(2**31)
        )
        if kind == "image":
            return Request(index, kind, IMAGE_PROMPT, video_seed=fresh, turn=turn)
        prompt = str(rng.choice(VIDEO_PROMPTS))
        if kind == "repeat":
            hot = int(rng.integers(spec.repeat_pool))
            seconds = spec.video_seconds[hot % len(spec.video_seconds)]
            return Request(index, kind, prompt, video_seed=hot, video_seconds=seconds, turn=turn)
        seconds = float(rng.choice(spec.video_seconds))
        return Request(index, kind, prompt, video_seed=fresh, video_seconds=seconds, turn=turn)

    def body(self, request: Request, model: str) -> dict:
        """An OpenAI chat-completion body with a fixed output length on every system.

        `max_tokens` caps the answer; `ignore_eos` and `min_tokens` (vLLM's extensions,
        ignored by servers that do not know them) keep it from stopping early, so
        every system produces the same number of tokens.
        """
        content: list[dict] = [{"type": "text", "text": request.prompt}]
        url = self.media_url(request)
        if url is not None:
            part = "image_url" if request.kind == "image" else "video_url"
            content.append({"type": part, part: {"url": url}})
        messages: list[dict] = [{"role": "user", "content": content}]
        for question in FOLLOW_UPS[: request.turn]:
            messages.append({"role": "assistant", "content": EARLIER_ANSWER})
            messages.append({"role": "user", "content": question})
        max_tokens = self.spec.max_tokens
        body = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,
            "min_tokens": max_tokens,
        }
        if self.spec.num_frames is not None:
            body["media_io_kwargs"] = {"video": {"num_frames": self.spec.num_frames}}
        return body

    def media_url(self, request: Request) -> str | None:
        """The request's video or image as a `data:` URL (made once each), if it has one."""
        if request.video_seed is None:
            return None
        if request.kind == "image":
            return self._image_url(request.video_seed)
        return self._video_url(request.video_seed, request.video_seconds)

    def prepare(self, indices: range, model: str, stream: int = MEASURED) -> list[PreparedRequest]:
        requests = (self.request(i, stream) for i in indices)
        return [PreparedRequest(r.kind, json.dumps(self.body(r, model)).encode()) for r in requests]

    def _make_video_url(self, seed: int, seconds: float) -> str:
        spec = self.spec
        with tempfile.TemporaryDirectory(prefix="loadgen-") as directory:
            path = write_sample_video(
                Path(directory) / "video.mp4",
                seconds=seconds,
                fps=spec.fps,
                width=spec.width,
                height=spec.height,
                seed=seed,
            )
            data = path.read_bytes()
        return "data:video/mp4;base64," + base64.b64encode(data).decode()

    def _make_image_url(self, seed: int) -> str:
        spec = self.spec
        (pixels,) = sample_frames(1, spec.width, spec.height, seed)
        png = io.BytesIO()
        Image.fromarray(pixels).save(png, format="PNG")
        return "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
