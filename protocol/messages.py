"""Messages between the stages of the graph, in the order a request meets them.

Each stage boundary has one request type and one response type, so a reader can
follow a request from the frontend to the encode worker by reading this file
top to bottom. Tensors never travel in these messages: they carry NIXL
metadata (a plain dict from `transport`) that the receiver reads from.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from protocol.openai import TokenLogprob

FinishReason = Literal["stop", "length"]
Stage = Literal["queued", "fetching", "decoding", "encoding", "generating"]
"""Where a request is on its way through the graph, in the order it gets there."""


class SamplingOptions(BaseModel):
    """What the engine needs to pick tokens; already resolved from the OpenAI request."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = Field(default_factory=dict)
    allowed_token_ids: list[int] | None = None
    seed: int | None = None
    min_tokens: int = 0
    stop: list[str] = Field(default_factory=list)
    stop_token_ids: list[int] = Field(default_factory=list)
    ignore_eos: bool = False
    # None: no logprobs; N >= 0: the chosen token's logprob plus the N most likely.
    logprobs: int | None = None
    # Guided decoding: one of engine.guided.SPEC_KINDS -> its value, e.g. {"json": schema}.
    structured: dict[str, Any] | None = None


class MediaRef(BaseModel):
    """One `video_url`/`image_url` part of the prompt, in prompt order."""

    url: str
    modality: Literal["video", "image"]


class VideoInfo(BaseModel):
    """The video as the encode worker found it, and what it sampled from it."""

    duration_s: float
    fps: float
    width: int
    height: int
    frames_sampled: int
    sampled_width: int
    sampled_height: int


class StageUpdate(BaseModel):
    """A stage the request has just entered, sent ahead of the answer when asked for.

    Stages travel back up the same stream as the answer (encode worker -> prefill
    worker, when the prompt runs there -> decode worker -> processor -> frontend),
    inside `TokenOutput.stage` and `ProcessorOutput.stage`, only when the request
    set `report_stages`. The encode and prefill workers send them bare, ahead of
    their one answer (`components.stages.answer_after` reads such a stream).
    """

    stage: Stage
    video: VideoInfo | None = None


# Frontend -> Processor: the validated OpenAI request (protocol.openai) plus its id.


class ProcessorRequest(BaseModel):
    request_id: str
    # "chat": a ChatCompletionRequest; "completion": a CompletionRequest.
    kind: Literal["chat", "completion"] = "chat"
    request: dict[str, Any]
    report_stages: bool = False


class TokenLogprobs(BaseModel):
    """Logprob of the chosen token and the top alternatives, by token id."""

    logprob: float
    top: list[tuple[int, float]] = Field(default_factory=list)


class ProcessorOutput(BaseModel):
    """Processor -> Frontend: the next piece of one choice's text, logprobs in OpenAI shape.

    A request has `choices` of them (`n` per prompt), interleaved; each ends with its
    own finish reason. The usage fields are the whole request's so far.
    """

    index: int = 0
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stage: StageUpdate | None = None
    """Set (with no text or tokens) on a stage report; see `StageUpdate`."""
    choices: int = 1
    usage_prompt_tokens: int = 0
    usage_completion_tokens: int = 0


# Processor -> DecodeWorker


class GenerateRequest(BaseModel):
    request_id: str
    # One placeholder token per media item; the engine expands it to the embedding length.
    prompt_token_ids: list[int]
    media: list[MediaRef] = Field(default_factory=list)
    media_io_kwargs: dict[str, dict[str, Any]] | None = None
    sampling: SamplingOptions
    report_stages: bool = False
    # A migrated request: the tokens its lost decode worker had streamed. The new
    # worker prefills them with the prompt (itself: a prefill worker knows no
    # generated tokens) and streams the tokens after them; max_tokens still counts them.
    generated_token_ids: list[int] = Field(default_factory=list)

    def media_key(self) -> str | None:
        """The conversation's media, for KV-aware routing; see `media_key`."""
        return media_key(self.media, self.media_io_kwargs)


class TokenOutput(BaseModel):
    """DecodeWorker -> Processor: newly generated tokens of one request."""

    token_ids: list[int]
    logprobs: list[TokenLogprobs] | None = None
    finish_reason: FinishReason | None = None
    # The expanded prompt length (video tokens included), for `usage`.
    prompt_tokens: int = 0
    stage: StageUpdate | None = None


# DecodeWorker or PrefillWorker -> EncodeWorker


class EncodeRequest(BaseModel):
    """Answered with one `EncodeResponse`, after `StageUpdate`s if `report_stages` is set."""

    request_id: str
    media: MediaRef
    media_io_kwargs: dict[str, dict[str, Any]] | None = None
    report_stages: bool = False

    def media_key(self) -> str | None:
        """What the encode cache depends on; see `media_key`."""
        return media_key([self.media], self.media_io_kwargs)


def media_key(media: list[MediaRef], media_io_kwargs: dict[str, Any] | None) -> str | None:
    """What a cache of these media depends on: each item and how it is sampled, in order.

    Callers route on it (`router: cache-aware`) so that the same video reaches the
    same worker: the encode worker whose cache holds its embeddings, the decode or
    prefill worker whose prefix cache holds the KV of a conversation about it. A
    `data:` URL carries its content, so its hash is a content hash. None without media.
    """
    if not media:
        return None
    how = json.dumps(media_io_kwargs or {}, sort_keys=True, default=str)
    text = "\n".join(f"{item.modality}|{item.url}|{how}" for item in media)
    return hashlib.sha256(text.encode()).hexdigest()


class EncodeResponse(BaseModel):
    """Where to read the embeddings from; the encode worker frees them once read.

    The readable holds the embeddings, then one tensor per name in `features` (a
    family's per-token extras, e.g. Qwen3-VL's DeepStack features). `grid` and
    `expansion` are the rest of the family's `MediaEmbedding` (M-RoPE grid; the
    tokens that replace the placeholder, e.g. Qwen3-VL's frame timestamps).
    `content_hash` is the encode worker's cache key (media bytes, sampling, model):
    the engine's prefix cache names the item by it instead of hashing the embeddings.
    """

    embeddings: dict[str, Any]
    num_tokens: int
    num_frames: int
    cache_hit: bool
    modality: Literal["video", "image"] = "video"
    features: list[str] = Field(default_factory=list)
    grid: tuple[int, int, int] | None = None
    expansion: list[int] | None = None
    content_hash: str | None = None


# DecodeWorker -> PrefillWorker (disaggregated graph)


class PrefillRequest(GenerateRequest):
    """The same request, to be prefilled only: the decode worker keeps the sequence.

    Answered with one `PrefillResponse`, after `StageUpdate`s (the encode workers',
    then `generating`) if `report_stages` is set.
    """


class PrefillResponse(BaseModel):
    """The first token plus where to read the sequence's KV cache from."""

    first_token: int
    first_logprobs: TokenLogprobs
    finish_reason: FinishReason | None = None
    prompt_tokens: int
    # The native engine: NIXL metadata of one tensor in its KV export layout (engine.KV_LAYOUT).
    kv: dict[str, Any] | None = None
    # `engine: vllm`: what vLLM's NixlConnector on the decode side pulls the KV with.
    kv_transfer_params: dict[str, Any] | None = None
    # Where positions continue after the prompt (M-RoPE); the decode side needs it.
    rope_delta: int = 0
