"""One request as the engine sees it: its prompt, its sampling params, its tokens so far."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import Enum, auto

from engine.kv_cache import SequenceKV
from engine.models import MediaEmbedding
from engine.sampling import SampledToken, SamplerState, SamplingParams, SamplingRequest


class SequenceStatus(Enum):
    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()


@dataclass
class StepOutput:
    """One new token of one request, as `Engine.step()` reports it."""

    request_id: str
    token_id: int
    logprob: float
    top_logprobs: list[tuple[int, float]]
    finished: bool
    finish_reason: str | None  # "stop" | "length" once finished
    prompt_tokens: int  # after each <video> is expanded to its embeddings: what usage counts
    completion_tokens: int


@dataclass(eq=False)
class Sequence:
    """A request from admission to its last token.

    `prompt_token_ids` hold one `<video>` per video; `num_prompt_tokens` counts the
    prompt as the model sees it, each `<video>` expanded to its embedding length.
    A sequence prefilled elsewhere arrives with `imported_kv` and its first token
    already in `output_token_ids`.
    """

    request_id: str
    prompt_token_ids: list[int]
    num_prompt_tokens: int
    sampling: SamplingParams
    video_embeddings: list[MediaEmbedding] = field(default_factory=list)
    rope_delta: int = 0  # generated token i sits at position i + rope_delta (M-RoPE)
    imported_kv: SequenceKV | None = None
    output_token_ids: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: str | None = None
    # Unseeded requests still get a seed, drawn once, so every request samples the same way.
    seed: int = field(default_factory=lambda: secrets.randbits(63))
    sampler_state: SamplerState = field(default_factory=SamplerState)

    def __post_init__(self) -> None:
        if self.sampling.seed is not None:
            self.seed = self.sampling.seed

    @property
    def num_tokens(self) -> int:
        return self.num_prompt_tokens + len(self.output_token_ids)

    @property
    def last_token_id(self) -> int:
        return self.output_token_ids[-1]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def next_sampling_request(self) -> SamplingRequest:
        return SamplingRequest(
            self.sampling,
            self.seed,
            index=len(self.output_token_ids),
            prompt_token_ids=self.prompt_token_ids,
            output_token_ids=self.output_token_ids,
            state=self.sampler_state,
        )

    def append(self, token: SampledToken, finish_reason: str | None) -> StepOutput:
        """Records a generated token; a finish reason ends the sequence."""
        self.output_token_ids.append(token.token_id)
        if finish_reason is not None:
            self.status = SequenceStatus.FINISHED
            self.finish_reason = finish_reason
        return StepOutput(
            request_id=self.request_id,
            token_id=token.token_id,
            logprob=token.logprob,
            top_logprobs=token.top_logprobs,
            finished=self.is_finished,
            finish_reason=self.finish_reason,
            prompt_tokens=self.num_prompt_tokens,
            completion_tokens=len(self.output_token_ids),
        )
