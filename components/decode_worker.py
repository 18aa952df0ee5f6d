"""DecodeWorker: owns a sequence from its prompt to its last token.

The story of a request here:
1. decide where the prompt runs. With `remote-prefill`, a PrefillWorker runs it
   unless conditional disaggregation keeps it here: a short text-only prompt
   costs less to prefill than to ship its KV, and when every prefill worker's
   queue is full, waiting would cost more than prefilling locally. A migrated
   request (its decode worker died mid-stream; it comes with the tokens
   generated so far) is prefilled here, prompt and those tokens together;
2. locally: get each video's embeddings from EncodeWorkers over NIXL and add the
   sequence to the engine's running batch;
   remotely: the PrefillWorker returns the first token and where its KV cache
   lies; read the KV over NIXL and add the sequence to the batch with it;
3. stream the tokens back as the continuous-batching loop produces them. A
   cancelled request (the client went away) is aborted in the engine at once,
   which frees its KV cache.
A request with `report_stages` also gets the encode workers' stage reports
and `generating` when its sequence joins the batch, as token-less outputs;
prefilled remotely, the prefill worker streams those ahead of its reply, and
they are passed on the same way.

With `engine: vllm` the same story runs on vLLM's AsyncLLM: embeddings go in
as precomputed video embeddings, and a remote prefill hands back vLLM's
`kv_transfer_params`, with which vLLM's NixlConnector pulls the KV itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
from components.stages import Report, answer_after, reporting
from protocol.errors import ServiceError
from protocol.messages import (
    GenerateRequest,
    PrefillRequest,
    PrefillResponse,
    StageUpdate,
    TokenLogprobs,
    TokenOutput,
)
from runtime import Component, Context, NoInstances, WorkerLost, endpoint

if TYPE_CHECKING:
    import torch

    from engine import AsyncEngine, SamplingParams, StepOutput
    from engine.vllm_backend import VllmEngine

log = logging.getLogger(__name__)

# torch, the engine and NIXL are imported in start(): every process of the graph
# imports this module through graphs/, and the frontend should not pay for them.


class DecodeWorkerConfig(EngineWorkerConfig):
    max_num_seqs: int = Field(default=32, ge=1)
    remote_prefill: bool = False
    conditional_disagg: bool = True
    max_local_prefill_length: int = Field(default=64, ge=0)
    max_prefill_queue_size: int = Field(default=8, ge=1)


class DecodeWorker(Component):
    Config = DecodeWorkerConfig

    async def start(self) -> None:
        from engine import AsyncEngine

        self.engine: AsyncEngine | VllmEngine
        if self.config.engine == "vllm":
            kv_role = "consumer" if self.config.remote_prefill else None
            self.engine = await load_vllm_engine(self.config, self.config.max_num_seqs, kv_role)
        else:
            self.engine = AsyncEngine(
                await load_engine(self.config, self.config.max_num_seqs, part="language")
            )
        self.transport = open_transport(self.config)
        self.times = StageTimes()
        self.embeddings = EmbeddingSource(self.client("EncodeWorker"), self.transport, self.times)
        self.prefills = self.client("PrefillWorker") if self.config.remote_prefill else None
        self.counts = {
            "local_prefills": 0,
            "local_prefill_media": 0,  # videos and images in the prompts prefilled here
            "remote_prefills": 0,
            "prefill_fallbacks": 0,
            "kv_bytes_read": 0,
            "vllm_kv_handoffs": 0,
        }

    @endpoint
    async def generate(
        self, request: dict[str, Any], ctx: Context
    ) -> AsyncIterator[dict[str, Any]]:
        from engine import SamplingParams

        req = GenerateRequest.model_validate(request)
        if req.generated_token_ids and self.config.engine == "vllm":
            raise ServiceError("a migrated request cannot resume on vLLM: set migration-limit 0")
        sampling = SamplingParams(**req.sampling.model_dump())
        if self.prefill_remotely(req):
            self.counts["remote_prefills"] += 1
            outputs = self.remote_prefill_then_decode(req, sampling, ctx)
        else:
            self.counts["local_prefills"] += 1
            outputs = self.local_prefill_then_decode(req, sampling, ctx)
        async for output in outputs:
            yield output.model_dump()

    def prefill_remotely(self, req: GenerateRequest) -> bool:
        if self.prefills is None or req.generated_token_ids:
            return False
        queues = [self.prefills.inflight(i) for i in self.prefills.instances("prefill")]
        if not queues:
            return False  # no prefill worker (yet): serve rather than fail
        if not self.config.conditional_disagg:
            return True
        short_text = (
            not req.media and len(req.prompt_token_ids) < self.config.max_local_prefill_length
        )
        return not short_text and min(queues) < self.config.max_prefill_queue_size

    async def local_prefill_then_decode(
        self, req: GenerateRequest, sampling: SamplingParams, ctx: Context
    ) -> AsyncIterator[TokenOutput]:
        fetching = reporting(
            lambda report: self.embeddings.fetch(
                req.request_id,
                req.media,
                req.media_io_kwargs,
                ctx.time_left(),
                report if req.report_stages else None,
            )
        )
        async for item in fetching:
            if isinstance(item, StageUpdate):
                yield TokenOutput(token_ids=[], stage=item)
            else:
                embeddings = item
        if req.report_stages:
            yield TokenOutput(token_ids=[], stage=StageUpdate(stage="generating"))
        check_prompt_fits(
            req.prompt_token_ids + req.generated_token_ids, embeddings, self.config.max_model_len
        )
        self.counts["local_prefill_media"] += len(embeddings)
        # The engine keys sequences by this call's own id: `req.request_id` comes from
        # the client, and a retried request may reach us while its first try still runs.
        generated = req.generated_token_ids
        resumed = {"generated_token_ids": generated} if generated else {}
        steps = self.engine.generate(
            ctx.request_id, req.prompt_token_ids, embeddings, sampling, **resumed
        )
        async for step in steps:
            yield token_output(step, sampling)

    async def remote_prefill_then_decode(
        self, req: GenerateRequest, sampling: SamplingParams, ctx: Context
    ) -> AsyncIterator[TokenOutput]:
        from engine import SequenceKV
        from transport import TransferError

        assert self.prefills is not None
        prefill = PrefillRequest(**req.model_dump())
        try:
            if req.report_stages:
                prefilling = reporting(lambda report: self.prefill_on_worker(prefill, ctx, report))
                async with contextlib.aclosing(prefilling):
                    async for item in prefilling:
                        if isinstance(item, StageUpdate):
                            yield TokenOutput(token_ids=[], stage=item)
                        else:
                            reply = item
            else:
                reply = await self.prefill_on_worker(prefill, ctx, None)
            if (reply.kv is None) != (self.config.engine == "vllm") and reply.finish_reason is None:
                raise ServiceError(
                    "the prefill and decode workers run different engines; give both `engine: "
                    f"{self.config.engine}`"
                )
            kv = None if self.config.engine == "vllm" else await self.read_kv(reply)
        except (WorkerLost, NoInstances, TransferError) as error:
            # No prefill worker answered, or it died before we read its KV: no token
            # was sent yet, so prefilling here costs time but loses nothing. (Stages
            # already reported come again; the frontend keeps the furthest one.)
            log.warning("remote prefill of %s failed (%s); prefilling here", req.request_id, error)
            self.counts["prefill_fallbacks"] += 1
            async for output in self.local_prefill_then_decode(req, sampling, ctx):
                yield output
            return
        if kv is None:
            async for output in self.decode_in_vllm(req, sampling, reply, ctx):
                yield output
            return
        yield first_token_output(reply, sampling)
        if reply.finish_reason is not None:
            return
        steps = self.engine.generate_prefilled(
            ctx.request_id,
            req.prompt_token_ids,
            reply.first_token,
            SequenceKV(kv, reply.rope_delta),
            sampling,
        )
        async for step in steps:
            yield token_output(step, sampling)

    async def read_kv(self, reply: PrefillResponse) -> torch.Tensor:
        """The prompt's KV, read from the prefill worker's memory.

        Read before answering, even when the first token is the last: reading is
        what tells the prefill worker it may free the buffer.
        """
        from transport import RdmaMetadata

        assert reply.kv is not None
        with self.times.time("kv_transfer"):
            [kv] = await self.transport.read(RdmaMetadata.from_dict(reply.kv))
        self.counts["kv_bytes_read"] += kv.numel() * kv.element_size()
        return kv

    async def prefill_on_worker(
        self, prefill: PrefillRequest, ctx: Context, report: Report | None
    ) -> PrefillResponse:
        """A prefill worker's reply; given a `report`, its stage reports before it go there."""
        assert self.prefills is not None
        # The same video to the prefill worker whose prefix cache holds it (cache-aware).
        route_key = await asyncio.to_thread(prefill.media_key) if prefill.media else None
        if report is None:
            answer = await self.prefills.call(
                "prefill", prefill.model_dump(), deadline_s=ctx.time_left(), route_key=route_key
            )
            return PrefillResponse.model_validate(answer)
        replies = self.prefills.stream(
            "prefill", prefill.model_dump(), deadline_s=ctx.time_left(), route_key=route_key
        )
        return await answer_after(replies, PrefillResponse, report, "the prefill worker")

    async def decode_in_vllm(
        self, req: GenerateRequest, sampling: SamplingParams, reply: PrefillResponse, ctx: Context
    ) -> AsyncIterator[TokenOutput]:
        """vLLM's NixlConnector pulls the prompt's KV from the prefill worker's vLLM.

        vLLM recomputes the last prompt position to sample the first token, as in
        vLLM's own disaggregated serving, so every token streamed here is vLLM's.
        It still needs the videos to lay out the prompt (and hash it for its
        prefix cache): they come from the encode workers' cache.
        """
        if reply.kv_transfer_params is None:
            # The first token ended the request, so vLLM kept no KV for us.
            yield first_token_output(reply, sampling)
            return
        embeddings = await self.embeddings.fetch(
            req.request_id, req.media, req.media_io_kwargs, ctx.time_left()
        )
        self.counts["vllm_kv_handoffs"] += 1
        steps = self.engine.generate(
            ctx.request_id, req.prompt_token_ids, embeddings, sampling, reply.kv_transfer_params
        )
        async for step in steps:
            yield token_output(step, sampling)

    async def run(self) -> None:
        """vLLM's counters live in its engine process: keep them fresh for `stats()`.

        A dead vLLM engine ends this (raising), which stops the worker, so the
        supervisor starts a fresh one.
        """
        if self.config.engine == "vllm":
            await self.engine.watch()

    async def stop(self) -> None:
        await self.engine.close()

    def capacity(self) -> int:
        """The engine's max-num-seqs: the frontend's default admission limit counts it."""
        return self.engine.max_num_seqs

    def stats(self) -> dict[str, float]:
        return {
            **self.counts,
            "running_sequences": self.engine.num_running,
            **engine_stats(self.engine),
            "embedding_bytes_read": self.embeddings.bytes_read,
            **transport_stats(self.transport),
            **self.times.stats(),
            **device_stats(self.config),
        }


def token_output(step: StepOutput, sampling: SamplingParams) -> TokenOutput:
    logprobs = TokenLogprobs(logprob=step.logprob, top=step.top_logprobs)
    return TokenOutput(
        token_ids=[step.token_id],
        logprobs=[logprobs] if sampling.logprobs is not None else None,
        finish_reason=step.finish_reason,
        prompt_tokens=step.prompt_tokens,
    )


def first_token_output(reply: PrefillResponse, sampling: SamplingParams) -> TokenOutput:
    return TokenOutput(
        token_ids=[reply.first_token],
        logprobs=[reply.first_logprobs] if sampling.logprobs is not None else None,
        finish_reason=reply.finish_reason,
        prompt_tokens=reply.prompt_tokens,
    )
