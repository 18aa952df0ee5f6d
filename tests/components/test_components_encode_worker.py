"""The encode worker on its own (real tiny model, real decoding): images need no video options."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from components.encode_worker import EncodeWorker, EncodeWorkerConfig
from components.stages import ignore
from media import MediaError
from protocol.messages import EncodeRequest, MediaRef


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

        video = EncodeRequest(
            request_id="v", media=MediaRef(url="data:video/mp4;base64,AAAA", modality="video")
        )
        with pytest.raises(MediaError) as refused:
            await worker.embed(video, ignore)
        assert refused.value.rule == "enable-video"
    finally:
        await worker.stop()
