"""The request mix: fresh videos, repeated videos, and text-only prompts, reproducible by seed.

Request `i` of a run is a pure function of (seed, i), so two systems driven with
the same flags receive the same prompts and the same video bytes in the same
order. "repeat" requests reuse the exact bytes of a small pool of hot videos, which
is what an embedding cache keyed by content hash can hit; "video" requests each
get a video nobody has sent before. Videos are made locally (no media can be
downloaded here) and sent inline as `data:` URLs, so any server accepts them
without a file allow-list.
"""

from __future__ import annotations

import base64
import json
import tempfile
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np

from media.samples import write_sample_video

KINDS = ("video", "repeat", "text")
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


@dataclass(frozen=True)
class WorkloadSpec:
    """Shares of each request kind (they sum to 1) and the shape of the videos."""

    video_share: float = 1.0
    repeat_share: float = 0.0
    text_share: float = 0.0
    video_seconds: tuple[float, ...] = (1.0, 2.0, 4.0)
    fps: int = 10
    width: int = 96
    height: int = 64
    repeat_pool: int = 4
    max_tokens: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        shares = (self.video_share, self.repeat_share, self.text_share)
        if min(shares) < 0 or abs(sum(shares) - 1) > 1e-6:
            raise ValueError(
                f"--video-share + --repeat-share + --text-share must be non-negative and sum "
                f"to 1 (got {self.video_share} + {self.repeat_share} + {self.text_share})"
            )
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

    def request(self, index: int, stream: int = MEASURED) -> Request:
        """Request `index` of a stream of requests.

        Kind, prompt and video length depend on (seed, index) only; the bytes of a
        fresh video also depend on `stream`. So the warm-up and the cross-check
        streams follow the measured mix request for request without ever sending
        a fresh video the measured stream sends (which would be a cache hit).
        """
        spec = self.spec
        rng = np.random.default_rng([spec.seed, index])
        kind = str(rng.choice(KINDS, p=[spec.video_share, spec.repeat_share, spec.text_share]))
        if kind == "text":
            return Request(index, kind, str(rng.choice(TEXT_PROMPTS)))
        prompt = str(rng.choice(VIDEO_PROMPTS))
        if kind == "repeat":
            hot = int(rng.integers(spec.repeat_pool))
            seconds = spec.video_seconds[hot % len(spec.video_seconds)]
            return Request(index, kind, prompt, video_seed=hot, video_seconds=seconds)
        seconds = float(rng.choice(spec.video_seconds))
        # Fresh videos take seeds above the hot pool's, so they never collide with it.
        fresh = np.random.default_rng([spec.seed, index, stream]).integers(2**31)
        return Request(
            index, kind, prompt, video_seed=spec.repeat_pool + int(fresh), video_seconds=seconds
        )

    def body(self, request: Request, model: str) -> dict:
        """An OpenAI chat-completion body with a fixed output length on every system.

        `max_tokens` caps the answer; `ignore_eos` and `min_tokens` (vLLM's extensions,
        ignored by servers that do not know them) keep it from stopping early, so
        every system produces the same number of tokens.
        """
        content: list[dict] = [{"type": "text", "text": request.prompt}]
        url = self.video_url(request)
        if url is not None:
            content.append({"type": "video_url", "video_url": {"url": url}})
        max_tokens = self.spec.max_tokens
        return {
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,
            "min_tokens": max_tokens,
        }

    def video_url(self, request: Request) -> str | None:
        """The request's video as a `data:` URL (made once per seed and length), if it has one."""
        if request.video_seed is None:
            return None
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
