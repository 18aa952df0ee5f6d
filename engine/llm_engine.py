"""The engine loop: requests in, one token per running request out of every `step()`.

The engine is synchronous and single-threaded; a worker drives it by calling
`step()` while `has_unfinished()`. For disaggregated serving, a prefill worker
calls `prefill_export()` and ships the KV; a decode worker hands it to
`add_prefilled()` and the sequence joins the running batch like any other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.kv_cache import KVCache, SequenceKV
from engine.model_runner import ModelRunner
from engine.models import ALL_PARTS, MediaEmbedding, ModelFamily, Part, family_for
from engine.sampling import Sampler, SamplingParams
from engine.scheduler import Scheduler
from engine.sequence import Sequence, StepOutput
from engine.stopping import StopChecker

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Engine:
    def __init__(
        self,
        model: ModelFamily,
        max_num_seqs: int,
        max_model_len: int,
        max_prefill_tokens: int,
    ) -> None:
        self.model = model
        self.tokenizer = model.processor.tokenizer
        self.processor = model.processor
        self.video_token_id = model.media_token_ids.get("video")
        self.tokens_per_frame = model.tokens_per_frame
        self.eos_token_ids = model.eos_token_ids
        self.max_model_len = max_model_len
        spec = model.kv_spec
        assert spec is not None, "an engine that runs requests loads the language parts"
        self.kv_cache = KVCache(
            num_layers=spec.num_layers,
            num_kv_heads=spec.num_kv_heads,
            head_dim=spec.head_dim,
            num_slots=max_num_seqs,
            max_len=max_model_len,
            dtype=model.dtype,
            device=model.device,
        )
        self.runner = ModelRunner(model, self.kv_cache)
        self.scheduler = Scheduler(max_num_seqs, max_prefill_tokens)
        self.sampler = Sampler(self.eos_token_ids, self.tokenizer)
        self.stop = StopChecker(self.tokenizer, self.eos_token_ids, max_model_len)
        self._seqs: dict[str, Sequence] = {}

    @classmethod
    def load(
        cls,
        model: str | Path,
        device: str = "cpu",
        dtype: str = "float32",
        max_num_seqs: int = 16,
        max_model_len: int | None = None,
        max_prefill_tokens: int | None = None,
        parts: frozenset[Part] = ALL_PARTS,
    ) -> Engine:
        """Loads an HF checkpoint (id or directory) of a registered family for serving.

        The KV cache for `max_num_seqs` sequences of `max_model_len` tokens is
        allocated up front; `max_model_len` defaults to the model's context length.
        That is layers x 2 x kv_heads x head_dim x dtype bytes per token: 2 KiB for
        the tiny model, 512 KiB for LLaVA-NeXT-Video-7B in bfloat16 (16 x 4096
        tokens: 32 GiB), so size both to the device. Encode and prefill workers
        never hold a running sequence (`encode_video`, `prefill_export`): they load
        with `max_num_seqs=0` and allocate no KV cache at all.
        """
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        family = family_for(model).load(model, torch.device(device), _DTYPES[dtype], parts)
        max_model_len = max_model_len or family.max_position_embeddings
        return cls(family, max_num_seqs, max_model_len, max_prefill_tokens or max_model_len)

    def encode_video(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 RGB frames [N, H, W, 3] -> video embeddings [video_tokens, hidden]."""
        return self.model.encode(frames).embeddings

    def encode(
        self, frames: np.ndarray, modality: str = "video", timestamps: list[float] | None = None
    ) -> MediaEmbedding:
        """One video or image (frames [N, H, W, 3]) -> all the family needs of it in a prompt."""
        return self.model.encode(frames, modality, timestamps)

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
    ) -> None:
        """Queues a request; its first token comes out of the step that admits it."""
        self._register(self._new_sequence(request_id, prompt_token_ids, video_embeddings, sampling))

    def step(self) -> list[StepOutput]:
        """Decodes one token for every running request, then prefills newly admitted ones."""
        plan = self.scheduler.schedule()
        outputs: list[StepOutput] = []
        if plan.decode:
            logits = self.runner.decode(plan.decode)
            tokens = self.sampler(logits, [seq.next_sampling_request() for seq in plan.decode])
            for seq, token in zip(plan.decode, tokens, strict=True):
                outputs.append(seq.append(token, self.stop(seq, token.token_id)))
                if seq.is_finished:
                    self._release(seq)
        for seq in plan.prefill:
            if seq.imported_kv is not None:
                self.kv_cache.allocate(seq.request_id, seq.imported_kv)
                seq.imported_kv = None
                continue
            output, kv = self._prefill(seq)
            outputs.append(output)
            if seq.is_finished:
                self._release(seq)
            else:
                self.kv_cache.allocate(seq.request_id, kv)
        return outputs

    def abort(self, request_id: str) -> None:
        """Drops a request and frees its KV at once; unknown or finished ids are ignored."""
        seq = self._seqs.get(request_id)
        if seq is not None:
            seq.finish_reason = "abort"
            self._release(seq)

    def abort_all(self) -> None:
        for request_id in list(self._seqs):
            self.abort(request_id)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def prefill_export(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        video_embeddings: list[torch.Tensor | MediaEmbedding] | None = None,
        sampling: SamplingParams | None = None,
    ) -> tuple[StepOutput, SequenceKV]:
        """Runs the prompt now and returns its first token and KV; the engine keeps nothing.

        If the first token already finishes the request (`output.finished`), there
        is nothing left to decode.
        """
        seq = self._new_sequence(request_id, prompt_token_ids, video_embeddings, sampling)
        return self._prefill(seq)

    def add_prefilled(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        first_token_id: int,
        kv: SequenceKV,
        sampling: SamplingParams | None = None,
    ) -> None:
        """Continues a request prefilled elsewhere (`prefill_export`) in this engine's batch.

        The next token out of `step()` is its second one.
        """
        self.kv_cache.check_fits(kv)
        seq = Sequence(
            request_id,
            list(prompt_token_ids),
            num_prompt_tokens=kv.num_tokens,
            sampling=sampling or SamplingParams(),
            imported_kv=kv,
            output_token_ids=[first_token_id],
            rope_delta=kv.rope_delta,
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
        num_prompt_tokens = len(self.model.expand_prompt(prompt_token_ids, media).token_ids)
        if num_prompt_tokens >= self.max_model_len:
            raise ValueError(
                f"the prompt is {num_prompt_tokens} tokens with its videos expanded; "
                f"max-model-len is {self.max_model_len}: shorten it or sample fewer frames"
            )
        return Sequence(
            request_id,
            list(prompt_token_ids),
            num_prompt_tokens,
            sampling or SamplingParams(),
            video_embeddings=media,
        )

    def _register(self, seq: Sequence) -> None:
        if not self.kv_cache.num_slots:
            raise ValueError(
                "this engine was loaded with max_num_seqs=0, for encode_video and "
                "prefill_export only; load it with max_num_seqs >= 1 to run requests"
            )
        if seq.request_id in self._seqs:
            raise ValueError(f"request {seq.request_id!r} is already running; ids must be unique")
        self._seqs[seq.request_id] = seq
        self.scheduler.add(seq)

    def _prefill(self, seq: Sequence) -> tuple[StepOutput, SequenceKV]:
        logits, kv = self.runner.prefill(seq)
        seq.video_embeddings = []  # spliced into the KV now; free them
        token = self.sampler(logits[None], [seq.next_sampling_request()])[0]
        return seq.append(token, self.stop(seq, token.token_id)), kv

    def _release(self, seq: Sequence) -> None:
        self.scheduler.finish(seq)
        if seq.request_id in self.kv_cache.request_ids:
            self.kv_cache.free(seq.request_id)
        del self._seqs[seq.request_id]


def _as_media(item: torch.Tensor | MediaEmbedding) -> MediaEmbedding:
    """A bare tensor is a video's embeddings (LLaVA-NeXT-Video's whole encoding)."""
    return item if isinstance(item, MediaEmbedding) else MediaEmbedding(item)
