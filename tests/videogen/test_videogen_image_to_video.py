"""Image-to-video: `input_reference` conditions the tiny I2V Wan, exactly as diffusers does.

One VideoGenerationWorker in this process (no graph: its `generate` endpoint
called directly, its job loop run as a task, a `memory://` store), on the tiny
`WanImageToVideoPipeline` checkpoint; the reference is that pipeline called
here on the same weights, image and seed, its frames through the same H.264
encode.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wan_reference
from PIL import Image

from components.video_generation_worker import (
    VideoGenerationWorker,
    VideoGenerationWorkerConfig,
)
from engine import resolve_model
from protocol.errors import ServiceError
from runtime.server import Context
from videogen import VideoJob, VideoStore, new_job_id
from videogen.jobs import VideoRequest, VideoSubmit
from videogen.mp4 import decode_mp4, encode_mp4

MODEL = "tiny-wan-i2v"
PROMPT = "a boat on a lake"


@pytest.fixture(scope="module")
def wan_i2v_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny I2V Wan, built in a fresh cache."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VIDGRAPH_CACHE", str(tmp_path_factory.mktemp("vidgraph-cache")))
        yield Path(resolve_model(MODEL))


def png(size: tuple[int, int], draw: str) -> bytes:
    """A small picture that is not the video's size (the pipeline resizes it)."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    if draw == "gradient":
        pixels = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 60)], -1)
    else:  # checkerboard
        pixels = np.where(((x // 6 + y // 6) % 2)[..., None] == 1, [20, 40, 230], [240, 230, 10])
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def wan_i2v_in_process(wan_i2v_dir: Path) -> Any:
    """The reference: `WanImageToVideoPipeline` on the same checkpoint, in this process."""
    from diffusers import WanImageToVideoPipeline

    return wan_reference.load(WanImageToVideoPipeline, wan_i2v_dir)


async def make_video(worker: VideoGenerationWorker, image: bytes | None) -> VideoJob:
    """One job through the worker's endpoint, followed to its end: the final record."""
    submit = VideoSubmit(
        job_id=new_job_id(),
        model=MODEL,
        request=VideoRequest(
            prompt=PROMPT, size="32x32", num_frames=5, num_inference_steps=2, seed=7
        ),
        image=image,
    )
    context = Context(request_id=submit.job_id, deadline=time.monotonic() + 300)
    records = [r async for r in worker.generate(submit.model_dump(), context)]
    return VideoJob.model_validate(records[-1])


async def test_an_input_image_gives_the_video_wan_i2v_makes_in_process(
    wan_i2v_dir: Path, wan_i2v_in_process: Any
) -> None:
    config = VideoGenerationWorkerConfig(
        model=str(wan_i2v_dir),
        served_model_name=MODEL,
        storage_url=f"memory://videos-{new_job_id()}",
        storage_ttl_s=0,
    )
    worker = VideoGenerationWorker(config, None, None)  # type: ignore[arg-type]
    await worker.start()
    jobs = asyncio.create_task(worker.run())
    gradient, checkerboard = png((48, 40), "gradient"), png((40, 56), "checkerboard")
    try:
        with pytest.raises(ServiceError) as refused:
            await make_video(worker, None)
        assert refused.value.status == 400 and "image-to-video" in str(refused.value)
        first = await make_video(worker, gradient)
        second = await make_video(worker, checkerboard)
    finally:
        await worker.stop()
        await jobs
    store = VideoStore(config.storage_url)  # type: ignore[arg-type]
    videos = []
    for job, image in ((first, gradient), (second, checkerboard)):
        assert (job.status, job.progress, job.error) == ("completed", 100, None)
        params = job.params
        assert (params.width, params.height, params.num_frames, params.seed) == (32, 32, 5, 7)
        assert params.guidance_scale == 5.0  # the default, as wan_reference runs it
        mp4 = store.load_video(job.id)
        assert mp4 is not None
        frames = decode_mp4(mp4)
        assert frames.shape == (5, 32, 32, 3)
        expected = wan_reference.frames(
            wan_i2v_in_process,
            PROMPT,
            seed=7,
            size=32,
            num_frames=5,
            steps=2,
            image=Image.open(io.BytesIO(image)).convert("RGB"),
        )
        assert np.array_equal(decode_mp4(encode_mp4(expected, fps=params.fps)), frames)
        videos.append(frames)
    # Same prompt and seed: the image alone made them differ.
    assert not np.array_equal(videos[0], videos[1])
