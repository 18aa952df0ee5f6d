"""The encode worker on its own (real tiny model, real decoding): images need no video options."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from components.encode_worker import EncodeWorker, EncodeWorkerConfig
from components.stages import ignore
from media import MediaError, decode_video
from media.samples import write_sample_video
from protocol.messages import EncodeRequest, MediaRef, StageUpdate


def png_data_url(colour: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def test_an_image_is_encoded_on_a_worker_with_video_disabled() -> None:
    worker = EncodeWorker(EncodeWorkerConfig(enable_video=False), None, None)  # type: ignore[arg-type]
    await worker.start()
    try:
        red, blue = (
            EncodeRequest(request_id="r", media=MediaRef(url=png_data_url(c), modality="image"))
            for c in ((200, 0, 0), (0, 0, 200))
        )
        (red_embeddings, hit), (blue_embeddings, _) = [
            await worker.embed(request, ignore) for request in (red, blue)
        ]
        assert red_embeddings.modality == "image" and red_embeddings.num_tokens > 0 and not hit
        # the image, not a constant, was encoded
        assert not red_embeddings.embeddings.equal(blue_embeddings.embeddings)
        # the prefix cache names each image by the encode cache's key, not by its embeddings
        assert None is not red_embeddings.content_hash != blue_embeddings.content_hash
        again, hit = await worker.embed(red, ignore)
        assert hit and again.content_hash == red_embeddings.content_hash

        video = EncodeRequest(
            request_id="v", media=MediaRef(url="data:video/mp4;base64,AAAA", modality="video")
        )
        with pytest.raises(MediaError) as refused:
            await worker.embed(video, ignore)
        assert refused.value.rule == "enable-video"
    finally:
        await worker.stop()


async def test_a_qwen_video_reports_the_size_it_was_sampled_at_also_from_the_cache(
    tmp_path: Path,
) -> None:
    """qwen-vl-utils resizes frames to multiples of 32: the caller is told that size."""
    clip = write_sample_video(tmp_path / "clip.mp4", seconds=1.0, width=100, height=60)
    config = EncodeWorkerConfig(model="tiny-qwen3-vl", allowed_local_media_path=tmp_path)
    worker = EncodeWorker(config, None, None)  # type: ignore[arg-type]
    await worker.start()
    try:
        request = EncodeRequest(
            request_id="v",
            media=MediaRef(url=clip.as_uri(), modality="video"),
            report_stages=True,
        )
        told = []
        for _ in range(2):  # encoded, then from the cache
            updates: list[StageUpdate] = []
            _, hit = await worker.embed(request, updates.append)
            told.append((hit, next(u.video for u in updates if u.video is not None)))
        sampling = config.video_sampling(None, worker.engine.model.video_sampler)
        frames = (await decode_video(clip.read_bytes(), sampling)).frames
    finally:
        await worker.stop()
    (first_hit, first), (second_hit, second) = told
    assert (first_hit, second_hit) == (False, True)
    assert (first.width, first.height) == (100, 60)
    sampled = (first.sampled_width, first.sampled_height)
    assert sampled == (frames.shape[2], frames.shape[1]) != (100, 60)
    assert sampled[0] % 32 == 0 and sampled[1] % 32 == 0
    assert second == first
