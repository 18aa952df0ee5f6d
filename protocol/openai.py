"""The OpenAI chat and text completions surface, as clients of OpenAI and vLLM send it.

Honour or refuse, never ignore: every top-level field OpenAI or vLLM defines
is either honoured or listed in `REFUSED` and answered with a 400 naming it,
and a field neither defines is a 400 too (as OpenAI answers it). Message parts
stay lenient about extra keys, as OpenAI is.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator


class _Lenient(BaseModel):
    """Ignores unknown fields like the OpenAI API does."""

    model_config = ConfigDict(extra="ignore")


class _Strict(BaseModel):
    """Refuses unknown fields: a field that is ignored would silently change the answer."""

    model_config = ConfigDict(extra="forbid")


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class MediaUrl(_Lenient):
    url: str = Field(min_length=1)
    detail: str | None = None


class VideoUrlPart(_Lenient):
    type: Literal["video_url"]
    video_url: MediaUrl


class ImageUrlPart(_Lenient):
    type: Literal["image_url"]
    image_url: MediaUrl


ContentPart = Annotated[TextPart | VideoUrlPart | ImageUrlPart, Field(discriminator="type")]


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(_Strict):
    include_usage: bool = False
    # vLLM extension: usage on every chunk, not only in the last one.
    continuous_usage_stats: bool = False


class JsonSchema(_Strict):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is given exactly when type is 'json_schema'")
        return self


class StructuredOutputs(_Strict):
    """vLLM's `structured_outputs`: exactly one constraint on what is generated."""

    json_: dict[str, Any] | str | None = Field(default=None, alias="json")
    json_object: bool | None = None
    regex: str | None = None
    choice: list[str] | None = Field(default=None, min_length=1)
    grammar: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# Fields OpenAI or vLLM accept that vidgraph cannot honour. Sent with a value other than
# the ones listed (what "not asked for" looks like), they are a 400 naming the field.
REFUSED: dict[str, tuple[tuple[Any, ...], str]] = {
    "tools": ((None, []), "this server has no tool-calling chat template for its model"),
    "tool_choice": ((None, "none"), "this server has no tool calling"),
    "parallel_tool_calls": ((None,), "this server has no tool calling"),
    "functions": ((None, []), "this server has no function calling"),
    "function_call": ((None, "none"), "this server has no function calling"),
    "audio": ((None,), "this server generates text only"),
    "modalities": ((None, ["text"]), "this server generates text only"),
    "prediction": ((None,), "predicted outputs are not supported"),
    "reasoning_effort": ((None,), "the model served has no reasoning mode"),
    "verbosity": ((None,), "the model served has no verbosity control"),
    "web_search_options": ((None,), "this server has no web search"),
    "moderation": ((None,), "this server runs no moderation"),
    "prompt_cache_options": ((None,), "the prefix cache takes no per-request options"),
    "prompt_cache_retention": ((None,), "the prefix cache takes no per-request retention"),
    "store": ((None, False), "this server stores no completions"),
    "service_tier": ((None, "auto", "default"), "this server has one service tier"),
    "best_of": ((None,), "best_of is not supported; use n"),
    "use_beam_search": ((None, False), "beam search is not supported"),
    "length_penalty": ((None, 1, 1.0), "length_penalty applies to beam search only"),
    "echo": ((None, False), "echo is not supported"),
    "chat_template": ((None,), "a per-request chat template is not accepted"),
    "mm_processor_kwargs": ((None, {}), "use media_io_kwargs for media options"),
    "truncate_prompt_tokens": ((None,), "prompts are not truncated; shorten the prompt"),
    "prompt_logprobs": ((None,), "prompt logprobs are not supported"),
    "bad_words": ((None, []), "bad_words is not supported; use logit_bias"),
    "logits_processors": ((None, []), "custom logits processors are not accepted"),
    "return_token_ids": ((None, False), "use return_tokens_as_token_ids with logprobs"),
    "cache_salt": ((None,), "the prefix cache is not partitioned per salt"),
    "kv_transfer_params": ((None,), "KV transfer is internal to the graph"),
    "vllm_xargs": ((None, {}), "no extension arguments are accepted"),
    "priority": ((None, 0), "requests are served first come, first served"),
    "spaces_between_special_tokens": ((None, True), "special tokens are always spaced"),
    "structural_tag": ((None,), "structural tags are not supported"),
    "guided_whitespace_pattern": ((None,), "the grammar's whitespace is fixed"),
    "guided_decoding_backend": ((None, "xgrammar", "auto"), "the backend is xgrammar"),
    "suffix": ((None, ""), "suffix (insertion) is not supported"),
}


class SamplingFields(_Strict):
    """The sampling fields chat and text completions share, with vLLM's extensions."""

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float = Field(default=0.0, ge=0.0, le=1.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    repetition_penalty: float = Field(default=1.0, gt=0.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    allowed_token_ids: list[int] | None = Field(default=None, min_length=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] = []
    min_tokens: int = Field(default=0, ge=0)
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    n: int = Field(default=1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    user: str | None = None
    # Accepted and answered as OpenAI does where they cannot change the tokens.
    metadata: dict[str, str] | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    include_reasoning: bool = True
    # vLLM extension: report each token as "token_id:N" so clients need no tokenizer.
    return_tokens_as_token_ids: bool = False
    # Dynamo/vLLM extension: per-request media decoding options, e.g. {"video": {"num_frames": 16}}.
    media_io_kwargs: dict[str, dict[str, Any]] | None = None
    # vidgraph extension: seconds the whole request may take (queue, media, prefill, decode),
    # within the server's `request-timeout-s`; then 504 and the work stops downstream.
    timeout: float | None = Field(default=None, gt=0)
    # Known, but not honoured: see REFUSED.
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: Any = None
    functions: Any = None
    function_call: Any = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    web_search_options: Any = None
    moderation: Any = None
    prompt_cache_options: Any = None
    prompt_cache_retention: Any = None
    store: Any = None
    service_tier: Any = None
    best_of: Any = None
    use_beam_search: Any = None
    length_penalty: Any = None
    echo: Any = None
    chat_template: Any = None
    mm_processor_kwargs: Any = None
    truncate_prompt_tokens: Any = None
    prompt_logprobs: Any = None
    bad_words: Any = None
    logits_processors: Any = None
    return_token_ids: Any = None
    cache_salt: Any = None
    kv_transfer_params: Any = None
    vllm_xargs: Any = None
    priority: Any = None
    spaces_between_special_tokens: Any = None
    structural_tag: Any = None
    guided_whitespace_pattern: Any = None
    guided_decoding_backend: Any = None
    suffix: Any = None

    @field_validator(*REFUSED)
    @classmethod
    def _refused(cls, value: Any, info: ValidationInfo) -> Any:
        accepted, why = REFUSED[info.field_name]
        if any(value == ok and type(value) is type(ok) for ok in accepted if ok is not None):
            return value
        if value is not None:
            raise ValueError(f"not supported here ({why}); leave it out of the request")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias_by_token_id(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (value or {}).items():
            if not token.lstrip("-").isdigit() or int(token) < 0:
                raise ValueError(f"keys are token ids; {token!r} is not one")
            if not -100 <= bias <= 100:
                raise ValueError(f"biases are in [-100, 100]; token {token} has {bias}")
        return value

    @model_validator(mode="after")
    def _one_structured_output(self) -> SamplingFields:
        if len(self.structured) > 1:
            raise ValueError(
                f"ask for one structured output, not {len(self.structured)} "
                "(response_format, structured_outputs, guided_*)"
            )
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self

    @property
    def structured(self) -> list[dict[str, Any]]:
        """Every constraint the request asks for, as `engine.guided` specs."""
        specs: list[dict[str, Any]] = []
        if self.response_format is not None and self.response_format.type == "json_object":
            specs.append({"json_object": True})
        if self.response_format is not None and self.response_format.json_schema is not None:
            specs.append({"json": self.response_format.json_schema.schema_})
        if self.structured_outputs is not None:
            given = self.structured_outputs.model_dump(by_alias=True, exclude_none=True)
            if len(given) != 1:
                raise ValueError("structured_outputs takes exactly one of its fields")
            specs.append(given)
        guided = {
            "json": self.guided_json,
            "regex": self.guided_regex,
            "choice": self.guided_choice,
            "grammar": self.guided_grammar,
        }
        specs += [{kind: value} for kind, value in guided.items() if value is not None]
        return specs

    @property
    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens


class ChatCompletionRequest(SamplingFields):
    """`POST /v1/chat/completions`, with vLLM's and Dynamo's extensions.

    Every field OpenAI or vLLM defines is either honoured or, in `REFUSED`,
    refused with a 400 naming it; a field neither defines is a 400 as well.
    """

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    # vLLM's chat-template controls.
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = True
    documents: list[dict[str, str]] | None = None
    request_id: str | None = None

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        if self.continue_final_message and self.add_generation_prompt:
            raise ValueError("continue_final_message needs add_generation_prompt: false")
        return self

    @property
    def token_limit(self) -> int | None:
        """`max_completion_tokens` is the newer name; OpenAI prefers it when both are sent."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def top_logprobs_count(self) -> int | None:
        """None: no logprobs; N: the chosen token's plus the N most likely."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(SamplingFields):
    """`POST /v1/completions`: a text prompt, several, or token ids; vLLM's extensions."""

    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=1)
    logprobs: int | None = Field(default=None, ge=0, le=20)
    add_special_tokens: bool = True

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and (not value or any(p == [] or p == "" for p in value)):
            raise ValueError("give at least one prompt, and no empty ones")
        return value

    @property
    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: text, or token ids."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(p, int) for p in self.prompt):
            return [list(self.prompt)]  # type: ignore[arg-type]
        return list(self.prompt)  # type: ignore[arg-type]

    @property
    def top_logprobs_count(self) -> int | None:
        return self.logprobs


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionLogprobs(BaseModel):
    """The legacy completions' logprobs: parallel lists, one entry per token."""

    tokens: list[str] = []
    token_logprobs: list[float] = []
    top_logprobs: list[dict[str, float]] = []
    text_offset: list[int] = []


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class Completion(BaseModel):
    """A text completion, whole or (with `usage` only at the end) one chunk of a stream."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "vidgraph"
    # vLLM's: the context length; ours: what the model takes as input.
    max_model_len: int | None = None
    modalities: list[str] | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(BaseModel):
    """The body OpenAI returns with every 4xx/5xx; the `openai` client parses it."""

    error: ErrorInfo


def completion_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())
