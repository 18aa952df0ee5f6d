"""Drives an `Engine` from asyncio: one background loop steps it, each request streams its tokens.

The engine is not thread-safe, and a step blocks for a whole forward pass. So
every engine call (adding, aborting, prefilling for export, stepping) runs in
one worker thread, one batch of calls at a time: calls made from the event loop
are queued and run just before the next step. The event loop never waits on the
model, and the engine never sees two threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import torch

from engine.kv_cache import SequenceKV
from engine.llm_engine import Engine
from engine.models import MediaEmbedding
from engine.sampling import SamplingParams
from engine.sequence import StepOutput

_Call = tuple[Callable[[], Any], asyncio.Future[Any] | None]


class AsyncEngine:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._calls: list[_Call] = []
        self._streams: dict[str, asyncio.Queue[StepOutput | BaseException]] = {}
        self._wakeup = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def max_num_seqs(self) -> int:
        """The sequences the engine runs at once; more wait in its scheduler."""
        return self.engine.scheduler.max_num_seqs

    @property
    def num_running(self) -> int:
        """Requests streaming now, waiting for admission included."""
        return len(self._streams)

    def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        video_embeddings: list[torch.Tensor | MediaEmbedding] | None = None,
        sampling: SamplingParams | None = None,
        generated_token_ids: list[int] | None = None,
    ) -> AsyncIterator[StepOutput]:
        """Prefills here and streams every token; closing the iterator aborts the request.

        Given `generated_token_ids` (see `Engine.add_request`), it streams the tokens after them.
        """
        add = partial(
            self.engine.add_request,
            request_id,
            prompt_token_ids,
            video_embeddings,
            sampling,
            generated_token_ids,
        )
        return self._stream(request_id, add)

    def generate_prefilled(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        first_token_id: int,
        kv: SequenceKV,
        sampling: SamplingParams | None = None,
    ) -> AsyncIterator[StepOutput]:
        """Continues a request prefilled elsewhere; streams from its second token on."""
        add = partial(
            self.engine.add_prefilled, request_id, prompt_token_ids, first_token_id, kv, sampling
        )
        return self._stream(request_id, add)

    async def prefill_export(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        video_embeddings: list[torch.Tensor | MediaEmbedding] | None = None,
        sampling: SamplingParams | None = None,
    ) -> tuple[StepOutput, SequenceKV]:
        """`Engine.prefill_export`, run between two steps of the running batch."""
        export = partial(
            self.engine.prefill_export, request_id, prompt_token_ids, video_embeddings, sampling
        )
        return await self._call(export)

    async def close(self) -> None:
        """Stops the loop after the step in flight (a thread cannot be cancelled mid-step)."""
        self._closed = True
        self._wakeup.set()
        if self._loop is not None:
            await self._loop
        for queue in self._streams.values():
            queue.put_nowait(RuntimeError("the engine was closed while this request ran"))

    async def _stream(self, request_id: str, add: Callable[[], None]) -> AsyncIterator[StepOutput]:
        if request_id in self._streams:
            raise ValueError(f"request {request_id!r} is already streaming; ids must be unique")
        queue: asyncio.Queue[StepOutput | BaseException] = asyncio.Queue()
        self._streams[request_id] = queue
        finished = False
        try:
            await self._call(add)
            while not finished:
                output = await queue.get()
                if isinstance(output, BaseException):
                    raise output
                finished = output.finished
                yield output
        finally:
            del self._streams[request_id]
            if not finished:
                self._submit(partial(self.engine.abort, request_id), None)

    async def _call(self, call: Callable[[], Any]) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._submit(call, future)
        return await future

    def _submit(self, call: Callable[[], Any], future: asyncio.Future[Any] | None) -> None:
        if self._closed:
            raise RuntimeError("the engine is closed; start a new AsyncEngine")
        self._calls.append((call, future))
        self._wakeup.set()
        if self._loop is None:
            self._loop = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._closed:
            if not self._calls and not self.engine.has_unfinished():
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            calls, self._calls = self._calls, []
            results, outputs = await asyncio.to_thread(self._work, [call for call, _ in calls])
            for (_, future), (value, error) in zip(calls, results, strict=True):
                if future is None or future.done():
                    continue
                if error is None:
                    future.set_result(value)
                else:
                    future.set_exception(error)
            if isinstance(outputs, Exception):
                # A failed step leaves no batch to trust: every stream gets the error.
                for queue in self._streams.values():
                    queue.put_nowait(outputs)
                continue
            for output in outputs:
                queue = self._streams.get(output.request_id)
                if queue is not None:
                    queue.put_nowait(output)

    def _work(
        self, calls: list[Callable[[], Any]]
    ) -> tuple[list[tuple[Any, Exception | None]], list[StepOutput] | Exception]:
        """Runs in the worker thread: the queued calls, then one step."""
        results: list[tuple[Any, Exception | None]] = []
        for call in calls:
            try:
                results.append((call(), None))
            except Exception as error:  # raised to the caller awaiting this call
                results.append((None, error))
        if not self.engine.has_unfinished():
            return results, []
        try:
            return results, self.engine.step()
        except Exception as error:
            self.engine.abort_all()
            return results, error
