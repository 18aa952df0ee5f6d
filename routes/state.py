"""What the routes read from `app.state`: the graph behind the frontend, admission, metrics.

The frontend component builds one `FrontendState` when it starts and
`build_app` puts it on `app.state.frontend`; a route reaches it through
`frontend(request)`, never through a closure, so a router module is plain
top-level code that any app can include.

Families find what serves them by model type. Each component declares the
model type it serves (`Processor.model_type = "chat"`), etcd says which of its
instances are live, and a router that depends on `serves("videos")` answers
only where the graph runs a component of that type (404 elsewhere). When the
type is in the graph but no instance is live, the component's client gives
the instances a moment to come back before it answers 503.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fastapi import Request

from media import DEFAULT_UPLOAD_DIR, MediaFetcher, MediaOptions
from protocol.errors import ServiceError
from routes.admission import Admission
from routes.frame_budget import FrameBudget
from routes.metrics import FrontendMetrics, WorkerStats


class Upstream(Protocol):
    """What routes use of a component's client (`runtime.Client` is one)."""

    def stream(
        self, endpoint: str, request: Any, *, deadline_s: float | None = None
    ) -> AsyncIterator[Any]: ...

    def instances(self) -> list[Any]: ...

    async def collect_stats(self) -> dict[str, dict[str, float]]: ...


MiB = 1 << 20


@dataclass(frozen=True)
class AppSettings:
    """The app surface's defaults and limits (the Frontend's `inference-*` and upload keys).

    The defaults are those of the Qwen3-VL demos: 2 frames a second, at most
    768 frames, answers of up to 2048 tokens at temperature 0.7.
    """

    fps: float = 2.0
    max_frames: int = 768
    max_tokens: int = 2048
    temperature: float = 0.7
    upload_dir: Path = DEFAULT_UPLOAD_DIR
    max_upload_bytes: int = 256 * MiB


@dataclass
class FrameSettings:
    """/v1/frames/descriptions: its limits, defaults, and how it fetches videos itself."""

    max_per_request: int = 8192
    max_tokens: int = 256
    budget: FrameBudget = field(default_factory=lambda: FrameBudget(32))
    media: MediaOptions = field(default_factory=MediaOptions)
    _fetcher: MediaFetcher | None = None

    @property
    def fetcher(self) -> MediaFetcher:
        """The video form's fetcher (SSRF-safe, by `media`), made on first use."""
        if self._fetcher is None:
            self._fetcher = MediaFetcher(self.media)
        return self._fetcher


@dataclass
class FrontendState:
    """The graph as the routes see it."""

    model_name: str
    components: dict[str, Upstream]
    """Every component of the graph by name, as clients."""
    model_types: dict[str, str]
    """Model type ("chat", "videos", ...) -> the name of the component that serves it."""
    request_timeout_s: float
    admission: Admission
    metrics: FrontendMetrics
    apps: AppSettings = field(default_factory=AppSettings)
    frames: FrameSettings = field(default_factory=FrameSettings)
    started_at: float = field(default_factory=time.time)
    keepalive_s: float = 15.0
    """SSE comment interval while a stream waits for its first token."""

    def upstream(self, model_type: str) -> Upstream:
        """The client of the component serving `model_type`, or a 404 naming what is served."""
        name = self.model_types.get(model_type)
        if name is None:
            served = ", ".join(sorted(self.model_types)) or "none"
            raise ServiceError(
                f"this server runs no {model_type!r} model (model types served: {served})",
                status=404,
                type="invalid_request_error",
                code="model_type_not_served",
            )
        return self.components[name]

    async def graph_instances(self) -> dict[str, list[dict[str, str | int]]]:
        """Every component of the graph with its live instances."""
        return {
            name: [
                {"id": i.instance_id, "address": i.address, "pid": i.pid}
                for i in sorted(client.instances(), key=lambda i: i.instance_id)
            ]
            for name, client in self.components.items()
        }

    def capacity(self) -> int:
        """The requests the graph's live instances run at once, as they registered it (0: none
        reports one)."""
        return sum(
            instance.capacity or 0
            for client in self.components.values()
            for instance in client.instances()
        )

    async def worker_stats(self) -> WorkerStats:
        names = list(self.components)
        stats = await asyncio.gather(*(self.components[n].collect_stats() for n in names))
        return dict(zip(names, stats, strict=True))


def frontend(request: Request) -> FrontendState:
    """The accessor every route uses."""
    return request.app.state.frontend


def serves(model_type: str) -> Callable[[Request], None]:
    """A router dependency: the family's routes answer only where `model_type` is served."""

    def check(request: Request) -> None:
        frontend(request).upstream(model_type)

    return check
