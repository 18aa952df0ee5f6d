"""Video generation: a text prompt in, an MP4 out (Wan through diffusers).

`pipeline` runs the model with a per-step callback, `mp4` encodes frames
reproducibly, `storage` keeps videos and job records wherever fsspec reaches,
`jobs` turns loose requests into valid parameters and records. Nothing here
knows about the graph; `components/video_generation_worker.py` serves it.
"""

from videogen.jobs import (
    Defaults,
    GenerationParams,
    JobError,
    ProgressThrottle,
    VideoJob,
    VideoRequest,
    VideoRequestError,
    WorkerRef,
    new_job_id,
    resolve_params,
)
from videogen.storage import VideoStore

__all__ = [
    "Defaults",
    "GenerationParams",
    "JobError",
    "ProgressThrottle",
    "VideoJob",
    "VideoRequest",
    "VideoRequestError",
    "VideoStore",
    "WorkerRef",
    "new_job_id",
    "resolve_params",
]
