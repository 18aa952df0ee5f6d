"""The no-serving-overhead baseline: the load generator's requests through one process.

Each request does what the graph does — render the chat with the model's
template, fetch and sample its videos, encode them, prefill and decode with
continuous batching — but as function calls in this process, with no HTTP, no
request plane, no NIXL and no other processes. What the graph adds on top of
this is its serving overhead. Run it through the load generator:

    python -m benchmarks.loadgen --in-process --label engine --concurrency 1,8 ...

torch may use every core here, as a single-process server would; the graph's
model workers use `cpu-threads` (1) each.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from benchmarks.loadgen.record import RequestRecord
from benchmarks.loadgen.workload import PreparedRequest
from components.processor import render_messages, sampling_options
from engine import AsyncEngine, Engine, SamplingParams, resolve_model
from media import MediaFetcher, MediaOptions, decode_image, decode_video
from protocol.openai import ChatCompletionRequest

NUM_FRAMES = 8  # configs/*.yaml: Common.num-frames
MAX_MODEL_LEN = 4096


class InProcess:
    """The tiny model's engine, tokenizer and media pipeline, driven like a server."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.batch = AsyncEngine(engine)
        self.media = MediaOptions(num_frames=NUM_FRAMES)
        self.fetcher = MediaFetcher(self.media)

    @classmethod
    async def load(cls, model: str = "tiny") -> InProcess:
        engine = await asyncio.to_thread(
            Engine.load, resolve_model(model), max_num_seqs=64, max_model_len=MAX_MODEL_LEN
        )
        return cls(engine)

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
        embeddings = [await self._embed(item.url, item.modality) for item in media]
        options = sampling_options(chat, len(prompt_ids), MAX_MODEL_LEN)
        sampling = SamplingParams(**options.model_dump())
        tokens = 0
        async for step in self.batch.generate(uuid.uuid4().hex, prompt_ids, embeddings, sampling):
            record.on_content(time.perf_counter())
            tokens += 1
            record.input_tokens = step.prompt_tokens
        record.usage_output_tokens = tokens

    async def _embed(self, url: str, modality: str):  # -> torch.Tensor
        data = await self.fetcher.fetch(url)
        if modality == "video":
            decoded = await decode_video(data, self.media.video_sampling(None))
        else:
            decoded = await decode_image(data, self.media)
        return await asyncio.to_thread(self.engine.encode_video, decoded.frames)

    async def close(self) -> None:
        await self.batch.close()
        await self.fetcher.aclose()
