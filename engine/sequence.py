"""One request as the engine sees it: its tokens, its KV blocks, its sampling params.

`token_ids` is the prompt as the model sees it (each media placeholder expanded to
its item's tokens), then the generated tokens. The last generated token has no KV
yet: the step that feeds it computes it. `num_computed_tokens` counts the tokens
whose KV sits in the sequence's blocks (`block_table`); every step the scheduler
picks how many of the rest to compute (`num_scheduled_tokens`): the whole prompt,
a chunk of it, or the one token of a decode. A step whose tokens reach the end of
the sequence samples its next token.

A preempted sequence gives its blocks back and is computed again later from its
tokens, so it keeps what its prompt needs until it finishes: its media embeddings,
or the KV it was imported with (a sequence prefilled by another worker has no media
here to recompute from).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import Enum, auto

from engine.block_manager import BlockKey
from engine.kv_cache import SequenceKV
from engine.models import MediaEmbedding, PromptInputs
from engine.models.interface import MediaSpan
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

    `media_hashes` name each media item for prefix caching, in `media_spans` order;
    None means the media is unknown here (an imported KV): the sequence's blocks are
    then never cached, since they could not be told apart from another video's.
    """

    request_id: str
    token_ids: list[int]
    sampling: SamplingParams
    media: list[MediaEmbedding] = field(default_factory=list)
    media_spans: list[MediaSpan] = field(default_factory=list)
    media_hashes: list[str] | None = field(default_factory=list)
    imported_kv: SequenceKV | None = None
    num_prompt_tokens: int = -1  # -1: all of `token_ids`
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: str | None = None
    # Unseeded requests still get a seed, drawn once, so every request samples the same way.
    seed: int = field(default_factory=lambda: secrets.randbits(63))
    block_table: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_scheduled_tokens: int = 0
    rope_delta: int = 0
    prompt_inputs: PromptInputs | None = None  # while the prompt is being computed
    kv_to_import: bool = False  # the scheduler placed `imported_kv`'s tokens: copy them in
    # The prompt as the client sent it (placeholders unexpanded), for the sampler's
    # penalties, which look at which ids occur; None: `token_ids`' prompt part.
    prompt_token_ids: list[int] | None = None
    sampler_state: SamplerState = field(default_factory=SamplerState)

    def __post_init__(self) -> None:
        if self.sampling.seed is not None:
            self.seed = self.sampling.seed
        if self.num_prompt_tokens < 0:
            self.num_prompt_tokens = len(self.token_ids)
        if self.imported_kv is not None:
            self.rope_delta = self.imported_kv.rope_delta
        if self.prompt_token_ids is None:
            self.prompt_token_ids = self.token_ids[: self.num_prompt_tokens]

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def last_token_id(self) -> int:
        return self.token_ids[-1]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def cacheable(self) -> bool:
        return self.media_hashes is not None

    @property
    def samples_this_step(self) -> bool:
        return self.num_computed_tokens + self.num_scheduled_tokens == self.num_tokens

    def block_key(self, index: int, block_size: int) -> BlockKey:
        """Block `index`'s token ids, and each media item in it: its hash and where it starts."""
        start, end = index * block_size, (index + 1) * block_size
        media = b"".join(
            f"{digest}@{span.start - start};".encode()
            for span, digest in zip(self.media_spans, self.media_hashes or [], strict=True)
            if span.start < end and span.start + span.length > start
        )
        return tuple(self.token_ids[start:end]), media

    def next_sampling_request(self) -> SamplingRequest:
        return SamplingRequest(
            self.sampling,
            self.seed,
            index=len(self.output_token_ids),
            prompt_token_ids=self.prompt_token_ids or [],
            output_token_ids=self.output_token_ids,
            state=self.sampler_state,
        )

    def append(self, token: SampledToken, finish_reason: str | None) -> StepOutput:
        """Records a generated token; a finish reason ends the sequence."""
        self.token_ids.append(token.token_id)
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
