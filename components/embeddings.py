"""Getting a prompt's media embeddings from the EncodeWorkers, for decode and prefill workers.

The request for each video goes over the request plane to a router-chosen
EncodeWorker; the tensor itself comes back over NIXL, read straight from that
worker's memory. Videos of one prompt are fetched concurrently, so a prompt
with two videos can use two encode workers at once. Given a `report`, the
encode workers' stage reports are passed on to it as they arrive.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from components.stage_times import StageTimes
from components.stages import Report, answer_after
from protocol.errors import ServiceError, WorkerLost
from protocol.messages import EncodeRequest, EncodeResponse, MediaRef
from runtime import Client

if TYPE_CHECKING:
    from engine.models import MediaEmbedding
    from transport import Connector

log = logging.getLogger(__name__)
READ_ATTEMPTS = 2


class EmbeddingSource:
    def __init__(self, encoders: Client, transport: Connector, times: StageTimes) -> None:
        self.encoders = encoders
        self.transport = transport
        self.times = times
        self.bytes_read = 0

    async def fetch(
        self,
        request_id: str,
        media: list[MediaRef],
        media_io_kwargs: dict[str, dict[str, Any]] | None,
        deadline_s: float,
        report: Report | None = None,
    ) -> list[MediaEmbedding]:
        return list(
            await asyncio.gather(
                *(
                    self._one(request_id, item, media_io_kwargs, deadline_s, report)
                    for item in media
                )
            )
        )

    async def _one(
        self,
        request_id: str,
        media: MediaRef,
        media_io_kwargs: dict[str, dict[str, Any]] | None,
        deadline_s: float,
        report: Report | None,
    ) -> MediaEmbedding:
        from engine.models import MediaEmbedding
        from transport import RdmaMetadata, TransferError

        request = EncodeRequest(
            request_id=request_id,
            media=media,
            media_io_kwargs=media_io_kwargs,
            report_stages=report is not None,
        )
        failure: TransferError | None = None
        for _ in range(READ_ATTEMPTS):
            reply = await self._encode(request, deadline_s, report)
            try:
                with self.times.time("embedding_transfer"):
                    metadata = RdmaMetadata.from_dict(reply.embeddings)
                    tensors = await self.transport.read(metadata)
            except TransferError as error:
                # The buffer could not be read (its producer died, or its NIXL agent
                # was rebuilt): ask again; the router may pick another encode worker.
                log.warning("reading embeddings for %s failed: %s", request_id, error)
                failure = error
                continue
            self.bytes_read += sum(t.numel() * t.element_size() for t in tensors)
            return MediaEmbedding(
                tensors[0],
                reply.modality,
                features=dict(zip(reply.features, tensors[1:], strict=True)),
                grid=reply.grid,
                expansion=reply.expansion,
                content_hash=reply.content_hash,
            )
        raise WorkerLost(f"could not read the video embeddings: {failure}") from failure

    async def _encode(
        self, request: EncodeRequest, deadline_s: float, report: Report | None
    ) -> EncodeResponse:
        """The encode worker's answer; its stage reports before it go to `report`."""
        # The same video to the same (warm) worker; hashing an inline video is off the loop.
        route_key = await asyncio.to_thread(request.media_key)
        if report is None:
            answer = await self.encoders.call(
                "encode", request.model_dump(), deadline_s=deadline_s, route_key=route_key
            )
            return EncodeResponse.model_validate(answer)
        replies = self.encoders.stream(
            "encode", request.model_dump(), deadline_s=deadline_s, route_key=route_key
        )
        return await answer_after(replies, EncodeResponse, report, "the encode worker")


def check_prompt_fits(
    prompt_token_ids: list[int], media: list[MediaEmbedding], max_model_len: int
) -> int:
    """The prompt's length with each placeholder expanded; a 400 if no token would fit after it."""
    length = len(prompt_token_ids) - len(media) + sum(m.num_prompt_tokens for m in media)
    if length + 1 > max_model_len:
        raise ServiceError(
            f"the prompt is {length} tokens with its videos; the model takes {max_model_len}; "
            "send fewer frames (media_io_kwargs) or less text",
            status=400,
            type="invalid_request_error",
            param="messages",
        )
    return length
