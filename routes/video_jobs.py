"""The trip a video job takes through the graph, as the frontend sees it.

Workers serving video models register a card in etcd (`{name, type:
"videos", storage_url}`); the models a request may name, and where their
jobs are stored, come from the live cards. A job is submitted to one worker
of its model (the next in turn; on a full queue the next one, and 429 only
when every queue is full), which records it and answers at once. From then
on the record in storage is the truth: retrieving, listing and downloading
read storage, so any frontend answers for any job.

A job must never stay `in_progress` for a worker that is gone. The frontend
that submitted a job keeps its stream open and fails the job the moment the
worker's connection drops; any frontend reading a record whose worker
process is no longer registered fails it too (after a frontend restart, or
for another replica's jobs).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from protocol.errors import NoInstances, ServiceError, WorkerLost
from routes.state import FrontendState
from videogen import VideoJob, VideoRequest, VideoStore, new_job_id
from videogen.jobs import JOB_ID, VideoSubmit
from videogen.storage import Variant

log = logging.getLogger(__name__)

VIDEOS = "videos"
_FOLLOW_DEADLINE_S = 7 * 24 * 3600.0  # a job's stream lasts as long as the job


class VideoJobs:
    """Submit, find, cancel and fetch video jobs for the routes of `routes.videos`."""

    def __init__(self, state: FrontendState) -> None:
        self.state = state
        self._turn = itertools.count()
        self._stores: dict[str, VideoStore] = {}
        self._store_of_model: dict[str, VideoStore] = {}
        self._followers: set[asyncio.Task[None]] = set()

    @property
    def workers(self) -> Any:
        return self.state.upstream(VIDEOS)

    def live_models(self) -> dict[str, dict[str, Any]]:
        """Video model name -> its card, from the live instances."""
        cards = (instance.model for instance in self.workers.instances())
        return {c["name"]: c for c in cards if c and c.get("type") == VIDEOS}

    def model(self, name: str | None) -> str:
        """The model a request names (or the first live one), or the 404/503 that says why not."""
        live = self.live_models()
        if not live:
            raise NoInstances("no video model is live right now; retry in a moment")
        if name is None:
            return min(live)
        if name not in live:
            raise ServiceError(
                f"the model '{name}' does not exist; video models served: {', '.join(sorted(live))}"
                " (see /v1/models)",
                status=404,
                type="invalid_request_error",
                param="model",
                code="model_not_found",
            )
        return name

    async def submit(
        self, model: str, request: VideoRequest, image: bytes | None
    ) -> tuple[VideoJob, AsyncIterator[dict[str, Any]]]:
        """The accepted job's record, and its stream of later records (the caller closes it)."""
        submit = VideoSubmit(job_id=new_job_id(), model=model, request=request, image=image)
        candidates = [
            i
            for i in self.workers.instances()
            if i.model and i.model.get("name") == model and self.workers.reachable(i)
        ]
        if not candidates:
            raise NoInstances(f"no live worker serves '{model}' right now; retry in a moment")
        start = next(self._turn)
        refusal: ServiceError | None = None
        for k in range(len(candidates)):
            instance = candidates[(start + k) % len(candidates)]
            stream = self.workers.stream(
                "generate",
                submit.model_dump(),
                instance_id=instance.instance_id,
                deadline_s=_FOLLOW_DEADLINE_S,
            )
            try:
                first = await anext(stream)
            except ServiceError as error:
                await stream.aclose()  # type: ignore[attr-defined]
                if error.status != 429 and not isinstance(error, WorkerLost):
                    raise
                refusal = error
                continue
            return VideoJob.model_validate(first), stream
        if isinstance(refusal, WorkerLost):
            raise refusal
        raise ServiceError(
            f"every worker serving '{model}' has a full queue; retry later",
            status=429,
            type="rate_limit_exceeded",
            code="queue_full",
        )

    def follow_in_background(self, job: VideoJob, stream: AsyncIterator[dict[str, Any]]) -> None:
        """Watch the job's stream so that its worker's death fails it at once."""
        task = asyncio.create_task(self._follow(job, stream))
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)

    async def _follow(self, job: VideoJob, stream: AsyncIterator[dict[str, Any]]) -> None:
        try:
            async for _ in stream:
                pass
        except WorkerLost as lost:
            await self._fail_if_unfinished(job.id, "worker_lost", lost.message)
        except ServiceError as error:
            log.info("stopped following %s: %s", job.id, error)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    async def wait(self, job: VideoJob, stream: AsyncIterator[dict[str, Any]]) -> VideoJob:
        """Follow the job to its end (the synchronous API); cancel it if the caller leaves."""
        try:
            async for update in stream:
                job = VideoJob.model_validate(update)
                if job.finished:
                    return job
        except WorkerLost as lost:
            await self._fail_if_unfinished(job.id, "worker_lost", lost.message)
            raise
        except asyncio.CancelledError:
            with contextlib.suppress(ServiceError):
                await self.delete(job.id)
            raise
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        raise ServiceError(f"the worker ended job {job.id} without finishing it")

    async def get(self, job_id: str) -> VideoJob:
        job = await self._find(job_id)
        if job is None:
            raise _not_found(job_id)
        return job

    async def list(self, after: str | None, limit: int, order: str) -> dict[str, Any]:
        """A page of jobs, newest first for `order=desc`, as OpenAI's cursor pages are shaped."""
        jobs: list[VideoJob] = []
        for store in self._live_stores():
            jobs += [await self._checked(j) for j in await asyncio.to_thread(store.list_jobs)]
        now = time.time()
        jobs = [j for j in jobs if j.expires_at is None or j.expires_at > now]
        jobs.sort(key=lambda j: (j.created_at, j.id), reverse=order == "desc")
        if after is not None:
            ids = [j.id for j in jobs]
            if after not in ids:
                raise ServiceError(
                    f"after: no video '{after}' to continue from",
                    status=400,
                    type="invalid_request_error",
                    param="after",
                )
            jobs = jobs[ids.index(after) + 1 :]
        page = jobs[:limit]
        return {
            "object": "list",
            "data": [j.to_openai() for j in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(jobs) > limit,
        }

    async def delete(self, job_id: str) -> dict[str, Any]:
        """Cancel the job where it is queued or running, then delete its record and video."""
        job = await self._find(job_id)
        if job is None:
            raise _not_found(job_id)
        if not job.finished and job.worker is not None:
            worker = self._instance_of(job)
            if worker is not None:
                await self.workers.call(
                    "cancel", {"id": job.id}, instance_id=worker.instance_id, deadline_s=60
                )
        store = self._store_of(job)
        if store is not None:
            await asyncio.to_thread(store.delete, job.id)
        return {"id": job.id, "object": "video.deleted", "deleted": True}

    async def content(self, job_id: str, variant: Variant) -> bytes:
        job = await self.get(job_id)
        if job.status != "completed":
            raise ServiceError(
                f"video '{job_id}' is {job.status}, so it has no content"
                + (f" ({job.error.message})" if job.error else "; poll it until completed"),
                status=404,
                type="invalid_request_error",
                code="video_not_ready",
            )
        store = self._store_of(job)
        data = None if store is None else await asyncio.to_thread(store.load_video, job.id, variant)
        if data is None:
            raise _not_found(job_id)
        return data

    async def _find(self, job_id: str) -> VideoJob | None:
        if not JOB_ID.fullmatch(job_id):
            return None
        for store in self._live_stores():
            job = await asyncio.to_thread(store.load_job, job_id)
            if job is not None and (job.expires_at is None or job.expires_at > time.time()):
                return await self._checked(job)
        return None

    async def _checked(self, job: VideoJob) -> VideoJob:
        """The job, failed (and saved so) if it is unfinished and its worker process is gone."""
        if job.finished or job.worker is None or self._instance_of(job) is not None:
            return job
        where = f"{job.worker.host}, pid {job.worker.pid}"
        job.fail("worker_lost", f"the worker running this job ({where}) is gone; submit it again")
        store = self._store_of(job)
        if store is not None:
            await asyncio.to_thread(store.save_job, job)
        return job

    async def _fail_if_unfinished(self, job_id: str, code: str, message: str) -> None:
        for store in self._live_stores():
            job = await asyncio.to_thread(store.load_job, job_id)
            if job is not None and not job.finished:
                job.fail(code, f"the worker running this job was lost ({message}); submit it again")
                await asyncio.to_thread(store.save_job, job)

    def _instance_of(self, job: VideoJob) -> Any:
        ref = job.worker
        for instance in self.workers.instances():
            if ref is not None and (instance.host, instance.pid) == (ref.host, ref.pid):
                return instance
        return None

    def _live_stores(self) -> list[VideoStore]:
        """Every store a live card names, and those seen before (a worker may be restarting)."""
        for name, card in self.live_models().items():
            url = card["storage_url"]
            if url not in self._stores:
                self._stores[url] = VideoStore(url)
            self._store_of_model[name] = self._stores[url]
        return list(self._stores.values())

    def _store_of(self, job: VideoJob) -> VideoStore | None:
        return self._store_of_model.get(job.model)


def _not_found(job_id: str) -> ServiceError:
    return ServiceError(
        f"no video '{job_id}' (it never existed, was deleted, or has expired)",
        status=404,
        type="invalid_request_error",
        code="video_not_found",
    )
