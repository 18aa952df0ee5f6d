"""PrefillWorker: runs a prompt for a DecodeWorker and hands the KV cache back over NIXL.

The story of a request here: get each video's embeddings from EncodeWorkers
(over NIXL), run the prompt with the embeddings spliced in at the video
placeholders, sample the first token, and expose the sequence's KV cache as a
NIXL-readable buffer. The reply carries the first token and where to read the
KV from; the DecodeWorker pulls it into its own cache and the buffer is freed
on its completion notice, or when the lease runs out if it never comes.

With `engine: vllm`, vLLM runs the prompt as a KV producer: the reply carries
vLLM's `kv_transfer_params` instead, and vLLM keeps the blocks until the
decode worker's vLLM has pulled them with its NixlConnector.

A request with `report_stages` gets the encode workers' stage reports, then
`generating` as its prompt starts to run, streamed ahead of the reply, for
the decode worker to pass on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import Field

from components.embeddings import EmbeddingSource, check_prompt_fits
from components.model_worker import (
    EngineWorkerConfig,
    device_stats,
    engine_stats,
    load_engine,
    load_vllm_engine,
    open_transport,
    transport_stats,
)
from components.stage_times import StageTimes
from components.stages import Report, reporting
from protocol.messages import PrefillRequest, PrefillResponse, StageUpdate, TokenLogprobs
from runtime import Component, Context, endpoint

if TYPE_CHECKING:
    from engine import AsyncEngine, StepOutput
    from engine.vllm_backend import VllmEngine

# torch, the engine and NIXL are imported in start(): every process of the graph
# imports this module through graphs/, and the frontend should not pay for them.


class PrefillWorkerConfig(EngineWorkerConfig):
    kv_lease_s: float = Field(default=60.0, gt=0)
    # vLLM only: prompts run at once (the native engine runs one prefill per call).
    max_num_seqs: int = Field(default=32, ge=1)


class PrefillWorker(Component):
    Config = PrefillWorkerConfig

    async def start(self) -> None:
        from engine import AsyncEngine

        self.engine: AsyncEngine | VllmEngine
        if self.config.engine == "vllm":
            self.engine = await load_vllm_engine(self.config, self.config.max_num_seqs, "producer")
        else:
            # Prefill only: the KV leaves with each reply, so no KV cache is kept here.
            self.engine = AsyncEngine(
                await load_engine(self.config, max_num_seqs=0, part="language")
            )
        self.transport = open_transport(self.config)
        self.times = StageTimes()
        self.embeddings = EmbeddingSource(self.client("EncodeWorker"), self.transport, self.times)
        self.prefills = 0
        self.kv_bytes_exposed = 0

    @endpoint
    async def prefill(self, request: dict[str, Any], ctx: Context) -> AsyncIterator[dict[str, Any]]:
        req = PrefillRequest.model_validate(request)
        if not req.report_stages:
            yield (await self.run_prompt(req, ctx, None)).model_dump()
            return
        async for item in reporting(lambda report: self.run_prompt(req, ctx, report)):
            yield item.model_dump()

    async def run_prompt(
        self, req: PrefillRequest, ctx: Context, report: Report | None
    ) -> PrefillResponse:
        from engine import SamplingParams
        from transport import Descriptor

        embeddings = await self.embeddings.fetch(
            req.request_id, req.media, req.media_io_kwargs, ctx.time_left(), report
        )
        check_prompt_fits(req.prompt_token_ids, embeddings, self.config.max_model_len)
        if report is not None:
            report(StageUpdate(stage="generating"))
        sampling = SamplingParams(**req.sampling.model_dump())
        # `ctx.request_id` is unique per call, unlike the client-given `req.request_id`.
        if self.config.engine == "vllm":
            prefilled = await self.engine.prefill(
                ctx.request_id, req.prompt_token_ids, embeddings, sampling
            )
            self.prefills += 1
            return prefill_response(
                prefilled.first, kv_transfer_params=prefilled.kv_transfer_params
            )
        with self.times.time("prefill"):
            first, kv = await self.engine.prefill_export(
                ctx.request_id, req.prompt_token_ids, embeddings, sampling
            )
        readable = await self.transport.create_readable(
            [Descriptor(kv.data)], lease_s=self.config.kv_lease_s
        )
        self.prefills += 1
        self.kv_bytes_exposed += kv.data.numel() * kv.data.element_size()
        return prefill_response(first, kv=readable.metadata.to_dict(), rope_delta=kv.rope_delta)

    async def run(self) -> None:
        """vLLM's counters live in its engine process: keep them fresh (see DecodeWorker.run)."""
        if self.config.engine == "vllm":
            await self.engine.watch()

    async def stop(self) -> None:
        await self.engine.close()

    def stats(self) -> dict[str, float]:
        return {
            "prefills": self.prefills,
            "kv_bytes_exposed": self.kv_bytes_exposed,
            **engine_stats(self.engine),
            "embedding_bytes_read": self.embeddings.bytes_read,
            **transport_stats(self.transport),
            **self.times.stats(),
            **device_stats(self.config),
        }


def prefill_response(first: StepOutput, **kv: Any) -> PrefillResponse:
    """The reply: the first token, and `kv` (with its `rope_delta`) or `kv_transfer_params`
    to pull the KV with."""
    return PrefillResponse(
        first_token=first.token_id,
        first_logprobs=TokenLogprobs(logprob=first.logprob, top=first.top_logprobs),
        finish_reason=first.finish_reason,
        prompt_tokens=first.prompt_tokens,
        **kv,
    )
