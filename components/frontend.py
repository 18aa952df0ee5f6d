"""Frontend: the OpenAI-compatible HTTP server in front of the graph.

The story of a request here: validate the body against the OpenAI schema,
check the model name, admit it under `max-inflight` (or queue it), hand it to the component
serving its model type (a Processor for chat), and relay what comes back — one
JSON body, or Server-Sent Events ending in `data: [DONE]`. Every failure
anywhere in the graph arrives as a `ServiceError` and leaves as an OpenAI
error body with its status. The routes themselves live in `routes/`, one file
per API family; this component connects them to the graph and runs the server.

Before any of that, the API key (when one is set) and `max-request-bytes` are
checked. On SIGTERM the frontend drains: `/health` answers 503 so load
balancers look elsewhere, new requests get 503, and the ones in flight finish
before the server exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from pydantic import Field, SecretStr

from media import DEFAULT_UPLOAD_DIR, MediaOptions
from routes.admission import Admission, admission_limits
from routes.app import build_app
from routes.frame_budget import FrameBudget
from routes.metrics import FrontendMetrics
from routes.state import AppSettings, FrameSettings, FrontendState
from runtime import Component, ComponentConfig

log = logging.getLogger(__name__)

API_KEY_ENV = "VIDGRAPH_API_KEY"
MiB = 1 << 20
CAPACITY_POLL_S = 1.0  # how soon the default admission limits follow workers coming and going


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the runtime owns SIGTERM and calls stop()."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class FrontendConfig(ComponentConfig):
    model: str = "tiny"
    served_model_name: str | None = None
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=0, le=65535)
    max_inflight: int | None = Field(default=None, ge=1)
    """Requests answered at once; by default, twice the graph's capacity (the sum of its live
    decode workers' max-num-seqs, followed as they come and go; routes.admission)."""
    max_queued: int | None = Field(default=None, ge=0)
    """Requests that wait (FIFO) for a slot beyond max-inflight; past them, 429. By default,
    twice the graph's capacity too."""
    max_queue_wait_s: float = Field(default=60.0, gt=0)
    """How long a request may wait in that queue before it is answered 503."""
    sse_keepalive_s: float = Field(default=15.0, gt=0)
    """A stream whose first token takes longer gets an SSE comment this often meanwhile."""
    request_timeout_s: float = Field(default=600.0, gt=0)
    api_key: SecretStr | None = None
    """Required as `Authorization: Bearer` on /v1/ routes; else from $VIDGRAPH_API_KEY."""
    max_request_bytes: int = Field(default=64 * MiB, ge=1024)
    cors_allow_origins: list[str] = []
    """Origins browsers may call from; empty (the default) sends no CORS headers at all."""
    drain_timeout_s: float = Field(default=30.0, ge=0)
    inference_fps: float = Field(default=2.0, gt=0)
    inference_max_frames: int = Field(default=768, ge=1)
    inference_max_tokens: int = Field(default=2048, ge=1)
    inference_temperature: float = Field(default=0.7, ge=0, le=2)
    """Defaults of /v1/inference/* where a request leaves them out."""
    upload_dir: Path = DEFAULT_UPLOAD_DIR
    """Where uploads are spooled; encode workers read them there (their `upload-dir`)."""
    max_upload_bytes: int = Field(default=256 * MiB, ge=1024)
    """The largest upload; keep it at most the encode workers' `max-fetch-bytes`."""
    frames_max_per_request: int = Field(default=8192, ge=1)
    """/v1/frames/descriptions: more frames in one request is a 413."""
    frames_in_flight: int = Field(default=32, ge=1)
    """Frames of all frames requests in the graph at once, shared fairly (routes.frame_budget)."""
    frames_max_tokens: int = Field(default=256, ge=1)
    frames_media: MediaOptions = MediaOptions()
    """How the frontend fetches and decodes a frames request's `video_url` (the encode workers'
    keys: `allowed-local-media-path`, `allow-private-ips`, `max-fetch-bytes`, ...)."""


class Frontend(Component):
    Config = FrontendConfig

    async def start(self) -> None:
        model_name = self.config.served_model_name or self.config.model
        self.state = FrontendState(
            model_name=model_name,
            components={name: self.client(name) for name in self.graph.names()},
            model_types={
                component.model_type: component.name
                for component in self.graph.components
                if component.model_type is not None
            },
            request_timeout_s=self.config.request_timeout_s,
            admission=Admission(
                *admission_limits(0, self.config.max_inflight, self.config.max_queued),
                self.config.max_queue_wait_s,
            ),
            metrics=FrontendMetrics(model_name),
            apps=AppSettings(
                fps=self.config.inference_fps,
                max_frames=self.config.inference_max_frames,
                max_tokens=self.config.inference_max_tokens,
                temperature=self.config.inference_temperature,
                upload_dir=self.config.upload_dir,
                max_upload_bytes=self.config.max_upload_bytes,
            ),
            keepalive_s=self.config.sse_keepalive_s,
            frames=FrameSettings(
                max_per_request=self.config.frames_max_per_request,
                max_tokens=self.config.frames_max_tokens,
                budget=FrameBudget(self.config.frames_in_flight),
                media=self.config.frames_media,
            ),
        )
        api_key = self.config.api_key or SecretStr(os.environ.get(API_KEY_ENV, ""))
        app = build_app(
            self.state,
            api_key=api_key.get_secret_value(),
            max_request_bytes=self.config.max_request_bytes,
            cors_allow_origins=self.config.cors_allow_origins,
        )
        self.server = _Server(
            uvicorn.Config(app, host=self.config.host, port=self.config.port, log_level="warning")
        )

    async def run(self) -> None:
        follower = asyncio.create_task(self.follow_capacity())
        try:
            await self.server.serve()
        finally:
            follower.cancel()

    async def follow_capacity(self) -> None:
        """Keep the unconfigured admission limits at the graph's capacity as workers come and go.

        While no live worker reports one (all restarting), the last limits stay.
        """
        if self.config.max_inflight is not None and self.config.max_queued is not None:
            return
        while True:
            if capacity := self.state.capacity():
                self.state.admission.resize(
                    *admission_limits(capacity, self.config.max_inflight, self.config.max_queued)
                )
            await asyncio.sleep(CAPACITY_POLL_S)

    async def stop(self) -> None:
        left = await self.state.admission.drain(self.config.drain_timeout_s)
        if left:
            log.warning("%d requests still in flight after the drain; closing them", left)
        self.server.should_exit = True
