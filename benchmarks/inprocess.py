"""The no-serving-overhead baseline: the load generator's requests through one process.

Each request does what the graph does — render the chat with the model's
template, fetch and sample its videos, encode them (or take them from the same
LRU embedding cache, keyed the same way, as the graph's encode worker), prefill
and decode with continuous batching — but as function calls in this process,
with no HTTP, no request plane, no NIXL and no other processes. What the graph
adds on top of this is its serving overhead. Run it through the load generator:

    python -m benchmarks.loadgen --in-process --label engine --concurrency 1,8 ...

torch may use every core here, as a single-process server would; the graph's
model workers use `cpu-threads` (1) each.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid

from benchmarks.loadgen.record import RequestRecord
from benchmarks.loadgen.workload import PreparedRequest
from components.embedding_cache import (
    EmbeddingCache,
    SingleFlight,
    embedding_key,
    sampling_tag,
)
from components.encode_worker import EncodeWorkerConfig, MiB
from components.processor import render_messages, sampling_options
from engine import AsyncEngine, Engine, SamplingParams, resolve_model
from engine.models import MediaEmbedding
from media import MediaFetcher, MediaOptions, VideoSampling, decode_image, decode_video
from protocol.openai import ChatCompletionRequest

NUM_FRAMES = 8  # configs/*.yaml: Common.num-frames
MAX_MODEL_LEN = 4096
CACHE_MIB = EncodeWorkerConfig.model_fields["embedding_cache_mib"].default


class InProcess:
    """The tiny model's engine, tokenizer and media pipeline, driven like a server."""

    def __init__(self, engine: Engine, model: str) -> None:
        self.engine = engine
        self.model = model
        self.batch = AsyncEngine(engine)
        self.media = MediaOptions(num_frames=NUM_FRAMES)
        self.fetcher = MediaFetcher(self.media)
        self.cache = EmbeddingCache(CACHE_MIB * MiB)
        self.flights: SingleFlight = SingleFlight()

    @classmethod
    async def load(cls, model: str = "tiny") -> InProcess:
        engine = await asyncio.to_thread(
            Engine.load, resolve_model(model), max_num_seqs=64, max_model_len=MAX_MODEL_LEN
        )
        return cls(engine, model)

    async def send(self, request: PreparedRequest) -> RequestRecord:
        record = RequestRecord(kind=request.kind, start=time.perf_counter())
        try:
            chat = ChatCompletionRequest.model_validate(json.loads(request.payload))
            await self._generate(chat, record)
        except Exception as error:  # recorded like an HTTP error, as the load generator does
            record.fail(f"{type(error).__name__}: {error}", time.perf_counter())
        else:
            record.finish(time.perf_counter())
        return record

    async def _generate(self, chat: ChatCompletionRequest, record: RequestRecord) -> None:
        messages, media = render_messages(chat.messages)
        tokenizer = self.engine.tokenizer
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(text)["input_ids"]
        video_kwargs = (chat.media_io_kwargs or {}).get("video")
        embeddings = [await self._embed(item.url, item.modality, video_kwargs) for item in media]
        options = sampling_options(chat, len(prompt_ids), MAX_MODEL_LEN)
        sampling = SamplingParams(**options.model_dump())
        tokens = 0
        async for step in self.batch.generate(uuid.uuid4().hex, prompt_ids, embeddings, sampling):
            record.on_content(time.perf_counter())
            tokens += 1
            record.input_tokens = step.prompt_tokens
        record.usage_output_tokens = tokens

    async def _embed(self, url: str, modality: str, video_kwargs: dict | None) -> MediaEmbedding:
        """As the encode worker: one fetch + encode per (URL, sampling) in flight, then cached."""
        sampling = self.media.video_sampling(video_kwargs)
        tag = sampling_tag(modality, sampling)
        embeddings, _ = await self.flights.run(
            (url, tag), lambda: self._fetch_and_embed(url, modality, sampling, tag)
        )
        return embeddings

    async def _fetch_and_embed(
        self, url: str, modality: str, sampling: VideoSampling, tag: str
    ) -> MediaEmbedding:
        data = await self.fetcher.fetch(url)
        key = embedding_key(data, tag, self.model)
        if (cached := self.cache.get(key)) is not None:
            return cached
        if modality == "video":
            decoded = await decode_video(data, sampling)
        else:
            decoded = await decode_image(data, self.media)
        times = (  # Qwen3-VL writes each frame's time into the prompt, as the encode worker
            [i / decoded.source_fps for i in decoded.frame_indices] if decoded.source_fps else None
        )
        encoded = await asyncio.to_thread(self.engine.encode, decoded.frames, modality, times)
        embeddings = dataclasses.replace(encoded, content_hash=key)  # the prefix cache's name
        self.cache.put(key, embeddings)
        return embeddings

    async def close(self) -> None:
        await self.batch.close()
        await self.fetcher.aclose()
