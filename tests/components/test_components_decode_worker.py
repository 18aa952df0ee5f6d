"""The decode worker's remote prefill when the prefill worker dies before its KV is read.

The prefill worker answers with where its KV lies; if it is killed before the
decode worker reads it, the read fails. No token has been sent yet, so the
decode worker prefills the prompt itself: the caller sees an answer, not an error.
The KV moves over a real tcp connector; the prefill worker and the local
prefill are stand-ins, the only parts of the worker not under test.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import torch

from components.decode_worker import DecodeWorker, DecodeWorkerConfig
from components.stage_times import StageTimes
from engine import SamplingParams
from protocol.messages import (
    GenerateRequest,
    PrefillResponse,
    SamplingOptions,
    TokenLogprobs,
    TokenOutput,
)
from runtime.server import Context
from transport import Connector, Descriptor

FIRST_TOKEN, LOCAL_TOKEN = 5, 7


class OnePrefillWorker:
    """The `PrefillWorker` client: one idle instance, whose reply points at `kv`."""

    def __init__(self, kv: dict[str, Any]) -> None:
        self.kv = kv

    def instances(self, endpoint: str) -> list[str]:
        return ["prefill-0"]

    def inflight(self, instance: str) -> int:
        return 0

    async def call(
        self, endpoint: str, payload: dict[str, Any], deadline_s: float, route_key: str | None
    ) -> dict:
        logprobs = TokenLogprobs(logprob=0.0)
        reply = PrefillResponse(
            first_token=FIRST_TOKEN,
            first_logprobs=logprobs,
            finish_reason="length",  # max_tokens 1: the first token is the answer
            prompt_tokens=3,
            kv=self.kv,
        )
        return reply.model_dump()


async def prefill_here(
    req: GenerateRequest, sampling: SamplingParams, ctx: Context
) -> AsyncIterator[TokenOutput]:
    yield TokenOutput(token_ids=[LOCAL_TOKEN], finish_reason="length")


@pytest.mark.parametrize("prefill_worker_dies", [False, True])
async def test_kv_unreadable_after_the_prefill_reply_means_prefilling_here(
    prefill_worker_dies: bool,
) -> None:
    producer, consumer = Connector("tcp"), Connector("tcp")
    readable = await producer.create_readable([Descriptor(torch.ones(4))], lease_s=30)
    if prefill_worker_dies:
        producer.close()
    worker = object.__new__(DecodeWorker)
    worker.config = DecodeWorkerConfig(remote_prefill=True)
    worker.prefills = OnePrefillWorker(readable.metadata.to_dict())
    worker.transport, worker.times, worker.counts = consumer, StageTimes(), Counter()
    worker.local_prefill_then_decode = prefill_here
    request = GenerateRequest(
        request_id="r", prompt_token_ids=[1, 2, 3], sampling=SamplingOptions(max_tokens=1)
    )
    try:
        outputs = [
            output.token_ids
            async for output in worker.remote_prefill_then_decode(
                request, SamplingParams(max_tokens=1), Context("c", time.monotonic() + 30)
            )
        ]
    finally:
        producer.close()
        consumer.close()

    if prefill_worker_dies:
        assert outputs == [[LOCAL_TOKEN]]
        assert worker.counts == {"prefill_fallbacks": 1}
    else:
        assert outputs == [[FIRST_TOKEN]]
        assert worker.counts == {"kv_bytes_read": 16}
