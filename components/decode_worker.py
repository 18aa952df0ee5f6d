"""DecodeWorker: owns a sequence from its prompt to its last token.

The story of a request here: get each video's embeddings from an EncodeWorker
(read over NIXL from that worker's memory), add the sequence to the engine's
running batch, and stream its tokens back as the continuous-batching loop
produces them. A cancelled request (the client went away) is aborted in the
engine at once, which frees its KV cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import Field

from components.model_worker import ModelWorkerConfig, load_engine
from protocol.errors import ServiceError
from protocol.messages import (
    EncodeRequest,
    EncodeResponse,
    GenerateRequest,
    MediaRef,
    TokenLogprobs,
    TokenOutput,
)
from runtime import Component, Context, endpoint

if TYPE_CHECKING:
    import torch

# torch, the engine and NIXL are imported in start(): every process of the graph
# imports this module through graphs/, and the frontend should not pay for them.


class DecodeWorkerConfig(ModelWorkerConfig):
    max_num_seqs: int = Field(default=32, ge=1)


class DecodeWorker(Component):
    Config = DecodeWorkerConfig

    async def start(self) -> None:
        from engine import AsyncEngine
        from transport import Connector

        self.engine = AsyncEngine(await load_engine(self.config, self.config.max_num_seqs))
        self.encoders = self.client("EncodeWorker")
        self.transport = Connector.get(self.config.transport)
        self.embedding_bytes_read = 0

    @endpoint
    async def generate(
        self, request: dict[str, Any], ctx: Context
    ) -> AsyncIterator[dict[str, Any]]:
        req = GenerateRequest.model_validate(request)
        embeddings = await asyncio.gather(
            *(self.fetch_embeddings(req, media) for media in req.media)
        )
        prompt_len = (
            len(req.prompt_token_ids) - len(embeddings) + sum(e.shape[0] for e in embeddings)
        )
        if prompt_len + 1 > self.config.max_model_len:
            raise ServiceError(
                f"the prompt is {prompt_len} tokens with its videos; the model takes "
                f"{self.config.max_model_len}; send fewer frames (media_io_kwargs) or less text",
                status=400,
                type="invalid_request_error",
                param="messages",
            )
        from engine import SamplingParams

        sampling = SamplingParams(**req.sampling.model_dump())
        async for out in self.engine.generate(
            req.request_id, req.prompt_token_ids, embeddings, sampling
        ):
            yield TokenOutput(
                token_ids=[out.token_id],
                logprobs=[TokenLogprobs(logprob=out.logprob, top=out.top_logprobs)]
                if req.sampling.logprobs is not None
                else None,
                finish_reason=out.finish_reason,
                prompt_tokens=out.prompt_tokens,
            ).model_dump()

    async def fetch_embeddings(self, req: GenerateRequest, media: MediaRef) -> torch.Tensor:
        encode = EncodeRequest(
            request_id=req.request_id, media=media, media_io_kwargs=req.media_io_kwargs
        )
        reply = EncodeResponse.model_validate(
            await self.encoders.call("encode", encode.model_dump())
        )
        from transport import RdmaMetadata

        [embeddings] = await self.transport.read(RdmaMetadata.from_dict(reply.embeddings))
        self.embedding_bytes_read += embeddings.numel() * embeddings.element_size()
        return embeddings

    def stats(self) -> dict[str, float]:
        return {
            "running_sequences": self.engine.num_running,
            "embedding_bytes_read": self.embedding_bytes_read,
            **{f"transport_{k}": v for k, v in self.transport.stats().items()},
        }
