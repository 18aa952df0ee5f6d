"""Image-to-video through the graph: `input_reference` conditions the tiny I2V Wan, exactly as
diffusers does.

A frontend and one VideoGenerationWorker serving the tiny `WanImageToVideoPipeline`
checkpoint, asked by the `openai` client with the image as a multipart file; the
reference is that pipeline called here on the same weights, image and seed, its
frames through the same H.264 encode.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import wan_reference
from PIL import Image

from engine import resolve_model
from graphs.serve import ROOT, serve_graph
from videogen.mp4 import decode_mp4, encode_mp4

# The openai client marks its video methods deprecated (the hosted API's end date).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="openai")

MODEL = "tiny-wan-i2v"
PROMPT = "a boat on a lake"
JOB = {"num_frames": 5, "num_inference_steps": 2, "seed": 7}


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


@pytest.fixture(scope="module")
def client(wan_i2v_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    """A videogen graph with one worker on the I2V checkpoint."""
    with serve_graph(
        "graphs.videogen",
        ROOT / "configs" / "videogen.yaml",
        f"--Common.model={MODEL}",
        f"--VideoGenerationWorker.storage-url={tmp_path_factory.mktemp('videos')}",
        "--VideoGenerationWorker.workers=1",
        log_path=tmp_path_factory.mktemp("videogen-i2v") / "serve.log",
    ) as running:
        yield openai.OpenAI(base_url=f"{running.base_url}/v1", api_key="unused", max_retries=0)


def test_an_input_image_gives_the_video_wan_i2v_makes_in_process(
    client: openai.OpenAI, wan_i2v_in_process: Any
) -> None:
    with pytest.raises(openai.BadRequestError, match="image-to-video") as refused:
        client.videos.create(prompt=PROMPT, model=MODEL, size="32x32", extra_body=JOB)
    assert refused.value.body["param"] == "input_reference"

    gradient, checkerboard = png((48, 40), "gradient"), png((40, 56), "checkerboard")
    videos = []
    for name, image in (("gradient.png", gradient), ("checkerboard.png", checkerboard)):
        video = client.videos.create_and_poll(
            prompt=PROMPT,
            model=MODEL,
            size="32x32",
            input_reference=(name, image, "image/png"),
            extra_body=JOB,
        )
        assert (video.status, video.progress, video.error) == ("completed", 100, None)
        assert (video.size, video.num_frames, video.seed) == ("32x32", 5, 7)
        frames = decode_mp4(client.videos.download_content(video.id).read())
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
        assert np.array_equal(decode_mp4(encode_mp4(expected, fps=16)), frames)
        videos.append(frames)
    # Same prompt and seed: the image alone made them differ.
    assert not np.array_equal(videos[0], videos[1])
