"""The engine loop: requests in, one step of every running request out of each `step()`.

The engine is synchronous and single-threaded; a worker drives it by calling
`step()` while `has_unfinished()`. Each step the scheduler picks the tokens to
compute (decodes, prompt chunks), the runner computes them in one forward pass over
the paged KV cache, the sampler draws a token for every sequence that reached its
end, and the scheduler records it all. For disaggregated serving, a prefill worker
calls `prefill_export()` and ships the KV; a decode worker hands it to
`add_prefilled()` and the sequence joins the running batch like any other.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from engine.block_manager import BlockManager
from engine.kv_cache import KVCache, SequenceKV
from engine.model_runner import ModelRunner
from engine.models import ALL_PARTS, MediaEmbedding, ModelFamily, Part, family_for
from engine.sampling import Sampler, SamplingParams
from engine.scheduler import Scheduler
from engine.sequence import Sequence, StepOutput
from engine.sizing import KVBudget, size_kv_cache
from engine.stopping import StopChecker

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
log = logging.getLogger(__name__)


class Engine:
    def __init__(
        self,
        model: ModelFamily,
        max_num_seqs: int,
        max_model_len: int,
        max_num_batched_tokens: int,
        num_blocks: int,
        block_size: int = 16,
        enable_prefix_caching: bool = True,
    ) -> None:
        self.model = model
        self.processor = model.processor
        self.tokenizer = model.processor.tokenizer
        self.video_token_id = model.media_token_ids.get("video")
        self.tokens_per_frame = model.tokens_per_frame
        self.eos_token_ids = model.eos_token_ids
        self.max_model_len = max_model_len
        self.block_manager = BlockManager(num_blocks, block_size, enable_prefix_caching)
        self.kv_cache = (
            KVCache(model.kv_spec, num_blocks, block_size, model.device)
            if model.kv_spec is not None
            else None
        )
        self.stop = StopChecker(self.tokenizer, self.eos_token_ids, max_model_len)
        self.scheduler = Scheduler(
            self.block_manager, max_num_seqs, max_num_batched_tokens, self.stop
        )
        self.runner = ModelRunner(model, self.kv_cache) if self.kv_cache is not None else None
        self.sampler = Sampler(self.eos_token_ids, self.tokenizer)
        self._seqs: dict[str, Sequence] = {}

    @classmethod
    def load(
        cls,
        model: str | Path,
        device: str = "cpu",
        dtype: str = "float32",
        max_num_seqs: int = 16,
        max_model_len: int | None = None,
        max_num_batched_tokens: int = 512,
        block_size: int = 16,
        kv_cache_memory: int | None = None,
        gpu_memory_utilization: float | None = None,
        enable_prefix_caching: bool = True,
        parts: frozenset[Part] = ALL_PARTS,
    ) -> Engine:
        """Loads an HF checkpoint (id or directory) of a registered family for serving.

        `parts` picks the weights: an encode worker loads `{Part.VISION}` and gets an
        engine that only encodes (no KV cache); prefill and decode workers load
        `{Part.LANGUAGE}`. The KV cache is sized from memory (see `engine/sizing.py`):
        `kv_cache_memory` bytes, or on CUDA `gpu_memory_utilization` of the device
        minus what the weights and a profiling forward at `max_num_batched_tokens`
        take; on CPU with neither, room for `max_num_seqs` (at least one) sequences of
        `max_model_len` tokens. It must hold at least one `max_model_len` sequence.
        `max_model_len` defaults to the model's context length.
        """
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        family = family_for(model).load(model, torch.device(device), _DTYPES[dtype], parts)
        max_model_len = max_model_len or family.max_position_embeddings
        num_blocks = 0
        if family.kv_spec is not None:
            budget = KVBudget(
                max_num_seqs=max_num_seqs,
                max_model_len=max_model_len,
                max_num_batched_tokens=max_num_batched_tokens,
                block_size=block_size,
                kv_cache_memory=kv_cache_memory,
                gpu_memory_utilization=gpu_memory_utilization,
            )
            num_blocks = size_kv_cache(family, budget)
        return cls(
            family,
            max_num_seqs,
            max_model_len,
            max_num_batched_tokens,
            num_blocks,
            block_size,
            enable_prefix_caching,
        )

    def encode_video(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 RGB frames [N, H, W, 3] -> video embeddings [video_tokens, hidden]."""
        return self.model.encode(frames).embeddings

    def encode(
        self, frames: np.ndarray, modality: str = "video", timestamps: list[float] | None = None
    ) -> MediaEmbedding:
        """One video or image (frames [N, H, W, 3]) -> all the family needs of it in a prompt."""
        return self.model.encode(frames, modality, timestamps)

    def add_request(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        video_embeddings: list[torch.Tensor | MediaEmbedding] | None = None,
        sampling: SamplingParams | None = None,
        generated_token_ids: list[int] | None = None,
    ) -> None:
        """Queues a request; its first token comes out of the step that computes its prompt.

        `generated_token_ids` resumes a request that another engine was generating (a
        migrated request): they are its first output tokens, computed with the prompt
        like a preempted sequence's, so the next token is sampled as if it had run here
        all along (same sampling index, penalties, max_tokens), and a generated id that
        happens to be a media placeholder stays a text token.
        """
        self._check_runs()
        seq = self._new_sequence(request_id, prompt_token_ids, video_embeddings, sampling)
        if generated_token_ids:
            seq.token_ids += generated_token_ids
            self._check_length(seq.num_tokens)
        self._register(seq)

    def step(self) -> list[StepOutput]:
        """Computes one scheduled batch: a token for every decoding request, prompt chunks."""
        seqs = self.scheduler.schedule()
        if not seqs:
            if self.scheduler.has_unfinished():
                raise RuntimeError("requests wait but none could be scheduled: an engine bug")
            return []
        assert self.runner is not None
        logits, sampling = self.runner.run(seqs)
        rows = [seq.next_sampling_request() for seq in sampling]
        tokens = self.sampler(logits, rows) if rows else []
        outputs = self.scheduler.postprocess(seqs, dict(zip(sampling, tokens, strict=True)))
        for output in outputs:
            if output.finished:
                del self._seqs[output.request_id]
        return outputs

    def abort(self, request_id: str) -> None:
        """Drops a request and frees its KV at once; unknown or finished ids are ignored."""
        seq = self._seqs.pop(request_id, None)
        if seq is not None:
            seq.finish_reason = "abort"
            self.scheduler.finish(seq)

    def abort_all(self) -> None:
        for request_id in list(self._seqs):
            self.abort(request_id)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def stats(self) -> dict[str, float]:
        """Counters for a worker's /metrics: KV blocks, prefix cache, preemptions."""
        blocks = self.block_manager
        return {
            "kv_blocks_total": blocks.num_blocks,
            "kv_blocks_free": blocks.num_free_blocks,
            "prefix_cache_queried_tokens": blocks.queried_tokens,
            "prefix_cache_hit_tokens": blocks.hit_tokens,
            "preemptions": self.scheduler.num_preemptions,
            "waiting_sequences": len(self.scheduler.waiting),
        }

    def prefill_export(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        video_embeddings: list[torch.Tensor | MediaEmbedding] | None = None,
        sampling: SamplingParams | None = None,
    ) -> tuple[StepOutput, SequenceKV]:
        """Runs the prompt now (in chunks of `max_num_batched_tokens`) and returns its first
        token and KV. The engine keeps no sequence, only the prompt's blocks in its prefix
        cache. If the first token already finishes the request (`output.finished`), there
        is nothing left to decode.
        """
        seq = self._new_sequence(request_id, prompt_token_ids, video_embeddings, sampling)
        self._check_runs()
        blocks = self.block_manager
        cached = blocks.cached_blocks(seq)
        if not blocks.can_allocate(cached, seq.num_tokens):
            raise RuntimeError(
                f"the prompt needs {blocks.blocks_for(seq.num_tokens)} KV blocks and "
                f"{blocks.num_free_blocks} are free: running requests hold the rest"
            )
        blocks.allocate(seq, cached, seq.num_tokens)
        assert self.runner is not None and self.kv_cache is not None
        try:
            while True:
                remaining = seq.num_tokens - seq.num_computed_tokens
                seq.num_scheduled_tokens = min(remaining, self.scheduler.max_num_batched_tokens)
                logits, sampling_seqs = self.runner.run([seq])
                if not sampling_seqs:
                    self.scheduler.postprocess([seq], {})
                    continue
                kv = self.kv_cache.export(seq.block_table, seq.num_prompt_tokens, seq.rope_delta)
                token = self.sampler(logits, [seq.next_sampling_request()])[0]
                [output] = self.scheduler.postprocess([seq], {seq: token})
                return output, kv
        finally:
            blocks.free(seq)

    def add_prefilled(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        first_token_id: int,
        kv: SequenceKV,
        sampling: SamplingParams | None = None,
    ) -> None:
        """Continues a request prefilled elsewhere (`prefill_export`) in this engine's batch.

        The next token out of `step()` is its second one. A text-only prompt's blocks
        enter the prefix cache; a prompt with media cannot (its media is not known
        here), and if it is preempted, its KV is imported again from `kv`.
        """
        self._check_runs()
        assert self.kv_cache is not None
        self.kv_cache.check_fits(kv)
        self._check_length(kv.num_tokens)
        text_only = len(prompt_token_ids) == kv.num_tokens
        seq = Sequence(
            request_id,
            (list(prompt_token_ids) if text_only else [-1] * kv.num_tokens) + [first_token_id],
            sampling or SamplingParams(),
            media_hashes=[] if text_only else None,
            imported_kv=kv,
            num_prompt_tokens=kv.num_tokens,
            prompt_token_ids=list(prompt_token_ids),
        )
        self._register(seq)

    def _new_sequence(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        video_embeddings: list[torch.Tensor | MediaEmbedding] | None,
        sampling: SamplingParams | None,
    ) -> Sequence:
        media = [_as_media(item) for item in video_embeddings or []]
        prompt = self.model.expand_prompt(prompt_token_ids, media)
        self._check_length(len(prompt.token_ids))
        return Sequence(
            request_id,
            prompt.token_ids,
            sampling or SamplingParams(),
            media=media,
            media_spans=prompt.media_spans,
            media_hashes=[item.content_hash or _content_hash(item) for item in media],
            prompt_token_ids=list(prompt_token_ids),
        )

    def _check_length(self, num_prompt_tokens: int) -> None:
        if num_prompt_tokens >= self.max_model_len:
            raise ValueError(
                f"the prompt is {num_prompt_tokens} tokens with its videos expanded; "
                f"max-model-len is {self.max_model_len}: shorten it or sample fewer frames"
            )

    def _check_runs(self) -> None:
        if self.runner is None:
            raise ValueError(
                "this engine was loaded without the language model, for encode_video only; "
                "load it with Part.LANGUAGE to run requests"
            )

    def _register(self, seq: Sequence) -> None:
        self._check_runs()
        if self.scheduler.max_num_seqs == 0:
            raise ValueError(
                "this engine was loaded with max_num_seqs=0, for encode_video and "
                "prefill_export only; load it with max_num_seqs >= 1 to run requests"
            )
        if seq.request_id in self._seqs:
            raise ValueError(f"request {seq.request_id!r} is already running; ids must be unique")
        self._seqs[seq.request_id] = seq
        self.scheduler.add(seq)


def _as_media(item: torch.Tensor | MediaEmbedding) -> MediaEmbedding:
    """A bare tensor is a video's embeddings (LLaVA-NeXT-Video's whole encoding)."""
    return item if isinstance(item, MediaEmbedding) else MediaEmbedding(item)


def _content_hash(item: MediaEmbedding) -> str:
    """A media item's identity from its embedding bytes, when the caller gave none."""
    data = item.embeddings.detach().contiguous().cpu().view(torch.uint8).numpy()
    return hashlib.blake2b(data.tobytes(), digest_size=16).hexdigest()
