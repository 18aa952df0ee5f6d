"""vLLM under vidgraph's workers: `AsyncLLM` fed the embeddings our encode workers computed.

This is the only module that imports vllm, and it runs only in the vLLM venv
(`make install-vllm`); a worker with `engine: vllm` imports it in `start()`.

Embeddings in, not pixels. vLLM takes precomputed embeddings for a modality
whose `limit_mm_per_prompt` is 0 when `enable_mm_embeds` is on: it then builds
the model without that modality's tower (a `StageMissingLayer`: no weights, no
code to run) and skips encoder profiling. vLLM's LLaVA-NeXT-Video model already
counts embedding items in its prompt updates but has no `video_embeds` input,
so `register()` (vLLM's `vllm.general_plugins` entry point) adds one under an
architecture name of our own, `VidgraphLlavaNextVideo`, that a worker selects
with `hf_overrides`. Plain `vllm serve` in the same venv keeps vLLM's pixel
model. A plugin rather than an encoder-cache connector: a connector moves the
encoder *cache* of a model that still owns the tower and its scheduling
(profiling, budgets, hashes of pixels); what we need is a model that has no
tower at all and takes the tensor we already pulled over NIXL.

KV between processes uses vLLM's NixlConnector (`kv-role: producer` on the
prefill worker, `consumer` on the decode worker): a producer runs the prompt
with `do_remote_decode` and returns the `kv_transfer_params` a consumer passes
back to pull the blocks.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from transformers import BatchFeature
from vllm import ModelRegistry
from vllm import SamplingParams as VllmSamplingParams
from vllm.distributed.kv_transfer.kv_connector.v1.nixl.stats import NixlKVConnectorStats
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.model_executor.models.llava_next_video import (
    LlavaNextVideoDummyInputsBuilder,
    LlavaNextVideoForConditionalGeneration,
    LlavaNextVideoMultiModalProcessor,
    LlavaNextVideoProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.outputs import RequestOutput
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
from vllm.v1.engine.async_llm import AsyncLLM

from engine.models import MediaEmbedding
from engine.sampling import SamplingParams
from engine.sequence import StepOutput

ARCHITECTURE = "VidgraphLlavaNextVideo"
KVRole = Literal["producer", "consumer"]


OWNER_ENV = "VIDGRAPH_VLLM_OWNER"  # the pid of the vidgraph worker that started this vLLM
NIXL_PROGRESS_DELAY_ENV = "VIDGRAPH_NIXL_PROGRESS_DELAY_US"  # see _pace_nixl_progress_thread
_watching = False


def register() -> None:
    """vLLM's plugin entry point; vLLM calls it once in each of its processes, so twice is fine.

    The model class is named by string: vLLM imports it only when it builds the
    model, so registering stays cheap and touches no device. In vLLM's engine
    process under a vidgraph worker, it also ties that process's life to the
    worker's: vLLM 0.32 leaves its engine process running (holding its memory,
    a GPU's too) when the process that started it is killed.
    """
    global _watching
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, f"{__name__}:VidgraphLlavaNextVideo")
    if os.environ.get(NIXL_PROGRESS_DELAY_ENV):
        _pace_nixl_progress_thread(int(os.environ[NIXL_PROGRESS_DELAY_ENV]))
    owner = os.environ.get(OWNER_ENV)
    if owner and os.getppid() == int(owner) and not _watching:
        _watching = True
        threading.Thread(target=_exit_with, args=(int(owner),), daemon=True).start()


def _pace_nixl_progress_thread(delay_us: int) -> None:
    """NIXL agents made in this process rest `delay_us` between idle rounds of progress.

    vLLM's NixlConnector starts its agent with a progress thread, and NIXL's Python
    API fixes that thread's rest at 0: it polls UCX nonstop, a whole core per vLLM
    worker even with nothing to move (measured here: 2 cores for two idle agents;
    0.05 with a rest of 100-1,000 us, a 4 MB read as fast). Two vLLM workers on a
    2-core host left the rest of the graph so little CPU that etcd leases lapsed.
    The thread must stay, though: it alone progresses an idle producer, whose KV a
    consumer is reading. So the agent's config gets a rest before NIXL builds it.
    """
    from vllm.distributed import nixl_utils

    wrapper = nixl_utils.NixlWrapper  # imports vLLM's choice of NIXL (None: not installed)
    if wrapper is None:
        return
    bindings = sys.modules[wrapper.__module__].nixlBind
    make_agent = bindings.nixlAgent
    if getattr(make_agent, "paced", False):
        return

    def paced_agent(name: str, config: Any) -> Any:
        config.pthrDelay = delay_us
        return make_agent(name, config)

    paced_agent.paced = True  # type: ignore[attr-defined]
    bindings.nixlAgent = paced_agent


def _exit_with(owner: int) -> None:
    """Kill this process once `owner`, its parent, is gone (it is then re-parented)."""
    while os.getppid() == owner:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGKILL)


class _EmbeddingsInfo(LlavaNextVideoProcessingInfo):
    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"video": None}  # as many videos as the prompt has `<video>` tokens


class _EmbeddingsProcessor(LlavaNextVideoMultiModalProcessor):
    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        return {
            **super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs),
            "video_embeds": MultiModalFieldConfig.batched("video"),
        }


@MULTIMODAL_REGISTRY.register_processor(
    _EmbeddingsProcessor, info=_EmbeddingsInfo, dummy_inputs=LlavaNextVideoDummyInputsBuilder
)
class VidgraphLlavaNextVideo(LlavaNextVideoForConditionalGeneration):
    """vLLM's LLaVA-NeXT-Video that also takes `video_embeds` [tokens, hidden] per video."""

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.vidgraph_counts = {"videos_from_embeddings": 0, "vision_tower_runs": 0}

    def embed_multimodal(self, **kwargs: object) -> list[torch.Tensor]:
        embeds = kwargs.pop("video_embeds", None)
        if embeds is None:
            return super().embed_multimodal(**kwargs)
        videos = list(embeds) if isinstance(embeds, torch.Tensor) else list(embeds)
        self.vidgraph_counts["videos_from_embeddings"] += len(videos)
        return videos

    def _video_pixels_to_features(self, vision_tower: Any, pixel_values: torch.Tensor):
        self.vidgraph_counts["vision_tower_runs"] += 1
        return super()._video_pixels_to_features(vision_tower, pixel_values)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        # The tower is absent (embeddings only), so its checkpoint tensors have no home.
        tower = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.")
        tower += ("model.multi_modal_projector.",)
        return super().load_weights((n, w) for n, w in weights if not n.startswith(tower))


class VidgraphWorkerExtension:
    """Mixed into vLLM's worker class, so `collective_rpc` can read counters where they live."""

    def vidgraph_count_kv_transfers(self) -> None:
        """Count the NixlConnector's finished KV reads (its own stats reset every step)."""
        from vllm.distributed.kv_transfer import get_kv_transfer_group, has_kv_transfer_group

        if has_kv_transfer_group():
            get_kv_transfer_group().connector_worker.xfer_stats.__class__ = _CountedXferStats

    def vidgraph_counts(self) -> dict[str, int]:
        model = self.model_runner.model  # type: ignore[attr-defined]
        return {**getattr(model, "vidgraph_counts", {}), **_KV_COUNTS}


_KV_COUNTS = {"kv_transfers": 0, "kv_bytes": 0}  # this process's KV reads, all requests


class _CountedXferStats(NixlKVConnectorStats):
    """NixlConnector's per-step transfer stats, also counted into `_KV_COUNTS`.

    A module-level class, since vLLM pickles these stats to its engine process.
    """

    def record_transfer(self, res: Any) -> None:
        _KV_COUNTS["kv_transfers"] += 1
        _KV_COUNTS["kv_bytes"] += getattr(res, "totalBytes", 0)
        super().record_transfer(res)


@dataclass(frozen=True)
class Prefilled:
    """A prompt run by a producer: its first token and where a consumer pulls the KV from."""

    first: StepOutput
    kv_transfer_params: dict[str, Any] | None


class VllmEngine:
    """One `AsyncLLM`, speaking in `engine.SamplingParams` and `StepOutput` like `AsyncEngine`."""

    def __init__(self, llm: AsyncLLM) -> None:
        self.llm = llm
        self.num_running = 0
        self._ids = itertools.count()
        self._counts: dict[str, int] = {}
        self._ended = False  # a request ended since `watch()` last read the counters

    @classmethod
    def start(
        cls,
        model: str,
        dtype: str,
        max_model_len: int,
        max_num_seqs: int,
        vllm_args: Mapping[str, Any],
        kv_role: KVRole | None = None,
    ) -> VllmEngine:
        """Builds the engine (blocking: seconds to minutes, so call it from a thread).

        `vllm_args` are vLLM's engine arguments in their CLI spelling
        (`tensor-parallel-size: 2`) and win over everything set here.
        """
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; ignored on GPUs
        os.environ[OWNER_ENV] = str(os.getpid())  # for register() in vLLM's engine process
        args: dict[str, Any] = {
            "model": model,
            "dtype": dtype,
            "max_model_len": max_model_len,
            "max_num_seqs": max_num_seqs,
            "enable_mm_embeds": True,
            "limit_mm_per_prompt": {"video": 0, "image": 0},
            "hf_overrides": {"architectures": [ARCHITECTURE]},
            "worker_extension_cls": f"{__name__}.VidgraphWorkerExtension",
            "disable_log_stats": True,
        }
        if kv_role is not None:
            args["kv_transfer_config"] = {
                "kv_connector": "NixlConnector",
                "kv_role": "kv_producer" if kv_role == "producer" else "kv_consumer",
            }
        args.update({key.replace("-", "_"): value for key, value in vllm_args.items()})
        try:
            engine_args = AsyncEngineArgs(**args)
        except TypeError as error:
            raise ValueError(f"vllm-args: {error}") from None
        return cls(AsyncLLM.from_engine_args(engine_args))

    @property
    def max_num_seqs(self) -> int:
        """The sequences vLLM runs at once, as it settled them (`vllm-args` may have set it)."""
        return self.llm.vllm_config.scheduler_config.max_num_seqs

    async def warm_up(self) -> None:
        """Starts the counters, then runs one token so the first request pays no warm-up."""
        await self.llm.collective_rpc("vidgraph_count_kv_transfers")
        async for _ in self.generate("warm-up", [1, 2, 3], [], SamplingParams(max_tokens=1)):
            pass

    async def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        video_embeddings: list[MediaEmbedding],
        sampling: SamplingParams,
        kv_transfer_params: dict[str, Any] | None = None,
    ) -> AsyncIterator[StepOutput]:
        """Streams every token; closing the iterator aborts the request in vLLM."""
        params = _vllm_sampling(sampling, kv_transfer_params)
        prompt = _prompt(prompt_token_ids, video_embeddings)
        self.num_running += 1
        try:
            async for output in self.llm.generate(prompt, params, self._unique(request_id)):
                for step in _steps(output, sampling):
                    yield step
        finally:
            self.num_running -= 1
            self._ended = True

    async def prefill(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        video_embeddings: list[MediaEmbedding],
        sampling: SamplingParams,
    ) -> Prefilled:
        """Runs the prompt for a consumer elsewhere: the first token, the KV left for it to pull."""
        # vLLM refuses min_tokens over max_tokens: the first token alone keeps min_tokens' say
        # on it (no EOS yet); the decode side holds the rest of the request to it.
        first_only = replace(sampling, max_tokens=1, min_tokens=min(sampling.min_tokens, 1))
        params = _vllm_sampling(first_only, {"do_remote_decode": True})
        prompt = _prompt(prompt_token_ids, video_embeddings)
        final: RequestOutput | None = None
        try:
            async for output in self.llm.generate(prompt, params, self._unique(request_id)):
                final = output
        finally:
            self._ended = True
        assert final is not None and final.outputs[0].token_ids, "vLLM produced no first token"
        [first] = _steps(final, sampling)
        if first.finish_reason == "length" and sampling.max_tokens > 1:
            first = _unfinished(first)
        return Prefilled(first, final.kv_transfer_params)

    def stats(self) -> dict[str, float]:
        """The counters as of the last `watch()` round, named `vllm_*`."""
        return {f"vllm_{key}": float(value) for key, value in self._counts.items()}

    async def watch(self, every_s: float = 1.0) -> None:
        """Refreshes `stats()` after requests end; raises once vLLM's engine process is dead.

        Not on a timer: every `collective_rpc` wakes vLLM's worker processes, which
        then spin (sched_yield) for a second awaiting the next message, so reading
        the counters every second kept them spinning for good, a core each.
        """
        while True:
            if self._ended:
                self._ended = False
                self._counts = await self._unless_dead(self.counts(), every_s)
            if self.llm.errored:
                raise self.llm.dead_error
            await asyncio.sleep(every_s)

    async def _unless_dead(
        self, call: Coroutine[Any, Any, dict[str, int]], every_s: float
    ) -> dict[str, int]:
        """`call`'s result, or vLLM's error if its engine process dies first.

        An RPC to an engine that died meanwhile never returns, so waiting on it
        alone would keep this worker registered, and taking requests, for good.
        """
        task = asyncio.ensure_future(call)
        try:
            while not task.done():
                if self.llm.errored:
                    raise self.llm.dead_error
                await asyncio.wait([task], timeout=every_s)
            return task.result()
        finally:
            task.cancel()

    async def counts(self) -> dict[str, int]:
        """The model's counters, summed over vLLM's workers (they live in its engine process)."""
        totals: dict[str, int] = {}
        for counts in await self.llm.collective_rpc("vidgraph_counts"):
            for key, value in counts.items():
                totals[key] = totals.get(key, 0) + value
        return totals

    async def close(self) -> None:
        await asyncio.to_thread(self.llm.shutdown)

    def _unique(self, request_id: str) -> str:
        return f"{request_id}-{next(self._ids)}"


def _prompt(prompt_token_ids: list[int], videos: list[MediaEmbedding]) -> dict[str, Any]:
    """vLLM's prompt; our plugin model takes LLaVA-NeXT-Video's video embeddings only."""
    if any(item.modality != "video" for item in videos):
        raise ValueError("engine: vllm serves videos only; send images to the native engine")
    prompt: dict[str, Any] = {"prompt_token_ids": prompt_token_ids}
    if videos:
        embeddings = [v.embeddings.to(torch.get_default_dtype()) for v in videos]
        prompt["multi_modal_data"] = {"video": embeddings}
    return prompt


def _vllm_sampling(
    sampling: SamplingParams, kv_transfer_params: dict[str, Any] | None
) -> VllmSamplingParams:
    structured = None
    if sampling.structured:
        ((kind, value),) = sampling.structured.items()
        structured = StructuredOutputsParams(**{kind: value})
    return VllmSamplingParams(
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=max(sampling.top_k, 0),
        min_p=sampling.min_p,
        presence_penalty=sampling.presence_penalty,
        frequency_penalty=sampling.frequency_penalty,
        repetition_penalty=sampling.repetition_penalty,
        logit_bias=dict(sampling.logit_bias) or None,
        allowed_token_ids=sampling.allowed_token_ids,
        seed=sampling.seed,
        max_tokens=sampling.max_tokens,
        min_tokens=sampling.min_tokens,
        stop=list(sampling.stop),
        stop_token_ids=list(sampling.stop_token_ids),
        ignore_eos=sampling.ignore_eos,
        logprobs=sampling.logprobs,
        output_kind=RequestOutputKind.DELTA,
        structured_outputs=structured,
        extra_args={"kv_transfer_params": kv_transfer_params} if kv_transfer_params else None,
    )


def _steps(output: RequestOutput, sampling: SamplingParams) -> list[StepOutput]:
    """One `StepOutput` per new token of a DELTA output (vLLM may batch several in one)."""
    [completion] = output.outputs
    tokens = list(completion.token_ids)
    logprobs = completion.logprobs or [None] * len(tokens)
    steps = []
    if completion.finish_reason not in (None, "stop", "length"):
        raise RuntimeError(f"vLLM ended the request: {completion.finish_reason}")
    for i, (token_id, entry) in enumerate(zip(tokens, logprobs, strict=True)):
        last = i == len(tokens) - 1
        reason = completion.finish_reason if last and output.finished else None
        chosen, top = _logprobs(token_id, entry, sampling.logprobs)
        steps.append(
            StepOutput(
                request_id=output.request_id,
                token_id=token_id,
                logprob=chosen,
                top_logprobs=top,
                finished=last and output.finished,
                finish_reason=reason,
                prompt_tokens=len(output.prompt_token_ids or []),
                completion_tokens=0,
            )
        )
    return steps


def _logprobs(
    token_id: int, entry: Any, wanted: int | None
) -> tuple[float, list[tuple[int, float]]]:
    if entry is None:
        return 0.0, []
    ranked = sorted(entry.items(), key=lambda item: item[1].rank)
    top = [(t, lp.logprob) for t, lp in ranked if lp.rank <= (wanted or 0)][: wanted or 0]
    return entry[token_id].logprob, top


def _unfinished(step: StepOutput) -> StepOutput:
    """The producer stopped at its one token; the request itself goes on at the consumer."""
    return StepOutput(**{**step.__dict__, "finished": False, "finish_reason": None})
