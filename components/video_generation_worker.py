"""VideoGenerationWorker: a prompt in, an MP4 in storage out, with progress on the way.

The story of a job here: `generate` checks the request against the loaded
Wan (frame counts of 4k+1, sides of 16, the configured limits), refuses it
with 429 when this worker's queue is full, and otherwise records it as
`queued` in storage and answers at once, then keeps streaming the record as
it changes for callers who wait (the synchronous API). One job at a time runs
the pipeline in a thread; after a denoising step its progress is written to
the record (at most every `progress-interval-s`, and after the last step),
and a cancelled job stops at any step. The frames are encoded to
H.264 and stored beside the record, which becomes `completed`.

Everything a frontend needs to answer for a job is in the record, so the
frontend reads storage, not this process; the worker's host and pid in the
record let it tell a job whose worker died. This instance registers the model
it serves in etcd as type `videos`, with the storage URL the frontend reads.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from protocol.errors import ServiceError
from runtime import Component, ComponentConfig, Context, endpoint
from runtime.worker import ADVERTISE_ENV, LOOPBACK
from videogen import (
    Defaults,
    ProgressThrottle,
    VideoJob,
    VideoRequestError,
    VideoStore,
    WorkerRef,
    resolve_params,
)
from videogen.jobs import VideoSubmit

if TYPE_CHECKING:
    from videogen.pipeline import VideoPipeline

# torch and diffusers are imported in start(): every process of the graph imports
# this module through graphs/, and the frontend should not pay for them.

log = logging.getLogger(__name__)
_SWEEP_EVERY_S = 60.0


class VideoGenerationWorkerConfig(ComponentConfig, Defaults):
    model: str = "tiny-wan"
    """A Wan diffusers checkpoint: HF id, local path, or the built-in `tiny-wan`."""
    served_model_name: str | None = None
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    cpu_threads: int = Field(default=1, ge=1)
    storage_url: str | None = None
    """fsspec URL of videos and job records; default: `videos/` in the vidgraph cache."""
    storage_ttl_s: float = Field(default=24 * 3600.0, ge=0)
    """Videos (and their records) are deleted this long after they finish; 0 keeps them."""
    max_queue: int = Field(default=8, ge=0)
    """Jobs waiting behind the running one; beyond that a request is refused with 429."""
    progress_interval_s: float = Field(default=0.5, ge=0)
    """Least time between two progress updates of a running job (the last step's is always
    written); each is a record saved to storage. 0: after every step."""


class _Cancelled(Exception):
    """Raised from the step callback to leave the denoising loop of a cancelled job."""


@dataclass(eq=False)
class _Job:
    record: VideoJob
    image: bytes | None
    cancel: threading.Event = field(default_factory=threading.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class VideoGenerationWorker(Component):
    Config = VideoGenerationWorkerConfig
    model_type = "videos"

    async def start(self) -> None:
        self.model_name = self.config.served_model_name or self.config.model
        self.pipeline = await asyncio.to_thread(self._load_pipeline)
        self.store = VideoStore(self.config.storage_url or _default_storage())
        # One writer thread: a job's records are saved in the order they were made.
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="video-records")
        self.jobs: dict[str, _Job] = {}
        self.waiting: deque[_Job] = deque()
        self.wakeup = asyncio.Event()
        self.running: _Job | None = None
        self.stopping = False
        self.me = WorkerRef(host=os.environ.get(ADVERTISE_ENV, LOOPBACK), pid=os.getpid())
        self.counts = {"completed": 0, "failed": 0, "cancelled": 0}

    def _load_pipeline(self) -> VideoPipeline:
        from engine import resolve_model
        from videogen.pipeline import VideoPipeline

        config = self.config
        return VideoPipeline.load(
            resolve_model(config.model), config.device, config.dtype, config.cpu_threads
        )

    def model_card(self) -> dict[str, Any]:
        return {"name": self.model_name, "type": "videos", "storage_url": self.store.url}

    async def run(self) -> None:
        sweeper = asyncio.create_task(self._sweep_forever())
        try:
            while not self.stopping:
                if not self.waiting:
                    self.wakeup.clear()
                    await self.wakeup.wait()
                    continue
                await self._run_job(self.waiting.popleft())
        finally:
            sweeper.cancel()

    async def stop(self) -> None:
        """Fail what has not run (its caller may resubmit), stop what runs, save both."""
        self.stopping = True
        self.wakeup.set()
        while self.waiting:
            job = self.waiting.popleft()
            job.record.fail("worker_stopped", "the worker stopped before running this job")
            await self._finish(job)
        if self.running is not None:
            self.running.cancel.set()
            await asyncio.wait_for(self.running.done.wait(), timeout=30)
        self.writer.shutdown(wait=True)

    @endpoint
    async def generate(self, request: dict[str, Any], ctx: Context) -> AsyncIterator[dict]:
        """Accept a job (first reply: its `queued` record), then stream its record as it changes.

        A caller that only wants the job accepted leaves after the first reply;
        the job goes on without it.
        """
        submit = VideoSubmit.model_validate(request)
        job = _Job(self._new_record(submit), submit.image)
        if len(self.jobs) > self.config.max_queue:  # the running one, and max-queue waiting
            raise ServiceError(
                f"this worker's queue is full ({self.config.max_queue} jobs waiting); retry later",
                status=429,
                type="rate_limit_exceeded",
                code="queue_full",
            )
        self.jobs[job.record.id] = job
        self.waiting.append(job)
        await self._save(job)
        self.wakeup.set()
        while True:
            changed = job.changed
            yield job.record.model_dump()
            if job.done.is_set():
                return
            await changed.wait()

    @endpoint
    async def cancel(self, request: dict[str, Any], ctx: Context) -> AsyncIterator[dict]:
        """Stop job `request["id"]` if it is queued or running here; answers once it has stopped."""
        job = self.jobs.get(request["id"])
        if job is None:
            yield {"cancelled": False}
            return
        job.cancel.set()
        if job in self.waiting:
            self.waiting.remove(job)
            job.record.fail("cancelled", "the job was cancelled before it ran")
            await self._finish(job)
        await job.done.wait()
        yield {"cancelled": True}

    def _new_record(self, submit: VideoSubmit) -> VideoJob:
        """The job's record, or the 4xx that says why it cannot be made."""
        if submit.model != self.model_name:
            raise ServiceError(
                f"this worker serves '{self.model_name}', not '{submit.model}'",
                status=404,
                type="invalid_request_error",
                param="model",
                code="model_not_found",
            )
        if submit.image is not None and not self.pipeline.takes_image:
            raise ServiceError(
                f"'{self.model_name}' is a text-to-video model; input_reference needs an "
                "image-to-video Wan (e.g. Wan-AI/Wan2.1-I2V-14B-480P-Diffusers)",
                status=400,
                type="invalid_request_error",
                param="input_reference",
            )
        if submit.image is None and self.pipeline.takes_image:
            raise ServiceError(
                f"'{self.model_name}' is an image-to-video model; send the first frame "
                "as input_reference",
                status=400,
                type="invalid_request_error",
                param="input_reference",
            )
        try:
            params = resolve_params(
                submit.request, self.config, self.pipeline.temporal, self.pipeline.spatial
            )
        except VideoRequestError as error:
            raise ServiceError(
                str(error), status=error.status, type="invalid_request_error", param=error.param
            ) from None
        return VideoJob(
            id=submit.job_id,
            model=self.model_name,
            created_at=int(time.time()),
            params=params,
            worker=self.me,
        )

    async def _run_job(self, job: _Job) -> None:
        self.running = job
        record = job.record
        record.status = "in_progress"
        await self._save(job)
        loop = asyncio.get_running_loop()
        throttle = ProgressThrottle(self.config.progress_interval_s)

        def on_step(done: int, total: int) -> None:  # in the pipeline's thread
            if job.cancel.is_set():
                raise _Cancelled
            if throttle.due(done, total):
                loop.call_soon_threadsafe(self._progress, job, 100 * done // total)

        try:
            mp4, thumbnail = await asyncio.to_thread(self._make_video, job, on_step)
            await asyncio.get_running_loop().run_in_executor(
                self.writer, self.store.save_video, record.id, mp4, thumbnail
            )
        except _Cancelled:
            record.fail("cancelled", "the job was cancelled while it ran")
        except Exception as error:
            log.exception("job %s failed", record.id)
            record.fail("generation_failed", f"{type(error).__name__}: {error}")
        else:
            record.status, record.progress = "completed", 100
            record.completed_at = int(time.time())
            if self.config.storage_ttl_s:
                record.expires_at = record.completed_at + int(self.config.storage_ttl_s)
        finally:
            self.running = None
        await self._finish(job)

    def _make_video(self, job: _Job, on_step: Any) -> tuple[bytes, bytes]:
        from PIL import Image

        from videogen.mp4 import encode_mp4, thumbnail

        image = Image.open(io.BytesIO(job.image)).convert("RGB") if job.image else None
        frames = self.pipeline.generate(job.record.params, on_step, image)
        return encode_mp4(frames, job.record.params.fps), thumbnail(frames)

    def _progress(self, job: _Job, percent: int) -> None:
        if job.record.finished or percent <= job.record.progress:
            return
        job.record.progress = percent
        self.writer.submit(self.store.save_job, job.record.model_copy(deep=True))
        self._notify(job)

    async def _save(self, job: _Job) -> None:
        snapshot = job.record.model_copy(deep=True)
        await asyncio.get_running_loop().run_in_executor(self.writer, self.store.save_job, snapshot)
        self._notify(job)

    async def _finish(self, job: _Job) -> None:
        code = job.record.error.code if job.record.error else "completed"
        self.counts[code if code in self.counts else "failed"] += 1
        await self._save(job)
        self.jobs.pop(job.record.id, None)
        job.done.set()
        self._notify(job)

    @staticmethod
    def _notify(job: _Job) -> None:
        changed, job.changed = job.changed, asyncio.Event()
        changed.set()

    async def _sweep_forever(self) -> None:
        """Delete videos past their `expires_at` (any worker on the store may; they agree)."""
        if not self.config.storage_ttl_s:
            return
        while True:
            await asyncio.sleep(min(_SWEEP_EVERY_S, self.config.storage_ttl_s))
            try:
                gone = await asyncio.to_thread(self.store.expire)
            except OSError as error:
                log.warning("expiring old videos failed: %s", error)
                continue
            if gone:
                log.info("expired %d videos", len(gone))

    def stats(self) -> dict[str, float]:
        return {
            "video_jobs_waiting": len(self.waiting),
            "video_jobs_running": int(self.running is not None),
            **{f"video_jobs_{name}": n for name, n in self.counts.items()},
        }


def _default_storage() -> str:
    cache = Path(os.environ.get("VIDGRAPH_CACHE", Path.home() / ".cache" / "vidgraph"))
    return str(cache / "videos")
