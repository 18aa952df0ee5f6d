"""Where videos and their job records live: any fsspec URL, records beside videos.

    {root}/{job_id}.json   the job record (status, progress, parameters, error, times)
    {root}/{job_id}.mp4    the video, once completed
    {root}/{job_id}.webp   its thumbnail

Keeping the record with the video is what lets any frontend replica answer
for any job, and a restarted one still know the finished jobs. A local
directory is the default; `s3://bucket/prefix` works with `s3fs` installed;
`memory://` serves unit tests (it is per process). Records on a local disk are
written to a temporary name and renamed, so a reader never sees half a record.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from typing import Literal

import fsspec
from fsspec.implementations.local import LocalFileSystem

from videogen.jobs import JOB_ID, VideoJob

Variant = Literal["video", "thumbnail"]
_SUFFIX: dict[Variant, str] = {"video": ".mp4", "thumbnail": ".webp"}


class VideoStore:
    def __init__(self, url: str) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.local = isinstance(self.fs, LocalFileSystem)
        if self.local:
            self.root = os.path.abspath(self.root)
        self.fs.makedirs(self.root, exist_ok=True)
        self.url = self.root if self.local else self.fs.unstrip_protocol(self.root)
        """Absolute, so a process started elsewhere (another cwd) finds the same place."""

    def _path(self, job_id: str, suffix: str) -> str:
        if not JOB_ID.fullmatch(job_id):
            raise KeyError(job_id)
        return f"{self.root}/{job_id}{suffix}"

    def save_job(self, job: VideoJob) -> None:
        self._write(self._path(job.id, ".json"), job.model_dump_json().encode())

    def load_job(self, job_id: str) -> VideoJob | None:
        """The record, or None when there is none (never was, deleted, or expired)."""
        try:
            data = self.fs.cat_file(self._path(job_id, ".json"))
        except (FileNotFoundError, KeyError):
            return None
        return VideoJob.model_validate_json(data)

    def list_jobs(self) -> list[VideoJob]:
        jobs = []
        for path in self.fs.glob(f"{self.root}/video_*.json"):
            job = self.load_job(os.path.basename(path).removesuffix(".json"))
            if job is not None:
                jobs.append(job)
        return jobs

    def save_video(self, job_id: str, mp4: bytes, thumbnail: bytes) -> None:
        self._write(self._path(job_id, ".webp"), thumbnail)
        self._write(self._path(job_id, ".mp4"), mp4)

    def load_video(self, job_id: str, variant: Variant = "video") -> bytes | None:
        try:
            return self.fs.cat_file(self._path(job_id, _SUFFIX[variant]))
        except (FileNotFoundError, KeyError):
            return None

    def delete(self, job_id: str) -> None:
        """The record and its files; whatever is already gone is fine."""
        for suffix in (".mp4", ".webp", ".json"):
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self._path(job_id, suffix))

    def expire(self, now: float | None = None) -> list[str]:
        """Delete every job whose `expires_at` has passed; returns their ids."""
        now = time.time() if now is None else now
        gone = [j.id for j in self.list_jobs() if j.expires_at is not None and j.expires_at <= now]
        for job_id in gone:
            self.delete(job_id)
        return gone

    def _write(self, path: str, data: bytes) -> None:
        if not self.local:
            self.fs.pipe_file(path, data)  # object stores replace an object whole
            return
        staging = f"{path}.{uuid.uuid4().hex}.tmp"
        self.fs.pipe_file(staging, data)
        os.replace(staging, path)
