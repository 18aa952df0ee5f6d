"""Processor: turns an OpenAI request into token ids, and token ids back into text.

The story of a request here:
1. render a chat with the model's own chat template, one placeholder per video
   or image, and tokenize it exactly as the model's HF processor would (a text
   completion's prompt is tokenized as it is, or taken as token ids);
2. check what can be checked before any worker spends time on it (media count,
   special tokens typed as text, prompt length, sampling options, the grammar);
3. route each of the request's choices (`n` per prompt) to a DecodeWorker and
   stream the generated token ids back, detokenized incrementally, cutting at
   stop strings (and, when the request asked for them, the graph's stage
   reports as they come); usage counts every choice, each prompt once.
   A decode worker lost mid-stream hands its choice on: the decode request goes
   to another worker with the tokens streamed so far (`migration-limit` times),
   which prefills prompt and tokens and streams on from the next token.
Each image or video part becomes the chat template's placeholder for its modality.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import Field

from components.detokenizer import Detokenizer
from components.fanout import merge
from protocol.errors import ServiceError, WorkerLost
from protocol.messages import (
    GenerateRequest,
    MediaRef,
    ProcessorOutput,
    ProcessorRequest,
    SamplingOptions,
    TokenLogprobs,
    TokenOutput,
)
from protocol.openai import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    SamplingFields,
    TextPart,
    TokenLogprob,
    TopLogprob,
    VideoUrlPart,
)
from runtime import Component, ComponentConfig, Context, endpoint

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


class ProcessorConfig(ComponentConfig):
    model: str = "tiny"
    max_model_len: int = Field(default=4096, ge=16)
    max_media_per_prompt: int = Field(default=4, ge=0)
    # How often one choice may move to another decode worker when its worker dies
    # mid-stream; 0: the client's stream ends with the error instead.
    migration_limit: int = Field(default=1, ge=0)


def _bad_request(message: str, param: str) -> ServiceError:
    return ServiceError(message, status=400, type="invalid_request_error", param=param)


def render_messages(messages: list[ChatMessage]) -> tuple[list[dict[str, Any]], list[MediaRef]]:
    """The chat as the HF chat template expects it, and its media in prompt order."""
    rendered: list[dict[str, Any]] = []
    media: list[MediaRef] = []
    for message in messages:
        if message.content is None or isinstance(message.content, str):
            rendered.append({"role": message.role, "content": message.content or ""})
            continue
        parts: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, TextPart):
                parts.append({"type": "text", "text": part.text})
            elif isinstance(part, VideoUrlPart):
                parts.append({"type": "video"})
                media.append(MediaRef(url=part.video_url.url, modality="video"))
            else:
                parts.append({"type": "image"})
                media.append(MediaRef(url=part.image_url.url, modality="image"))
        rendered.append({"role": message.role, "content": parts})
    return rendered, media


def message_texts(messages: list[ChatMessage]) -> list[str]:
    """Every piece of text a caller typed into the chat."""
    texts = []
    for message in messages:
        if isinstance(message.content, str):
            texts.append(message.content)
        elif message.content is not None:
            texts += [part.text for part in message.content if isinstance(part, TextPart)]
    return texts


def structured_spec(request: SamplingFields) -> dict[str, Any] | None:
    """The request's one grammar (response_format, structured_outputs or guided_*), checked."""
    from engine.guided import check_spec

    specs = request.structured
    if not specs:
        return None
    try:
        check_spec(specs[0])
    except ValueError as error:
        raise _bad_request(f"response_format: {error}", "response_format") from None
    return specs[0]


def sampling_options(
    request: SamplingFields, prompt_len: int, max_model_len: int
) -> SamplingOptions:
    """OpenAI's sampling fields resolved to what the engine runs, with vLLM's defaults."""
    room = max_model_len - prompt_len
    limit = request.token_limit
    if limit is not None and limit > room:
        raise _bad_request(
            f"max_tokens is {limit}, but the prompt already uses {prompt_len} of the "
            f"model's {max_model_len} tokens; ask for at most {room}",
            "max_tokens",
        )
    if request.min_tokens > (limit or room):
        raise _bad_request(
            f"min_tokens ({request.min_tokens}) is more than max_tokens ({limit or room})",
            "min_tokens",
        )
    temperature = 1.0 if request.temperature is None else request.temperature
    return SamplingOptions(
        max_tokens=limit or room,
        temperature=temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        top_k=-1 if request.top_k in (None, 0) else request.top_k,
        min_p=request.min_p,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        repetition_penalty=request.repetition_penalty,
        logit_bias={int(token): bias for token, bias in (request.logit_bias or {}).items()},
        allowed_token_ids=request.allowed_token_ids,
        seed=request.seed,
        min_tokens=request.min_tokens,
        stop=request.stop_strings,
        stop_token_ids=request.stop_token_ids,
        ignore_eos=request.ignore_eos,
        logprobs=request.top_logprobs_count,
        structured=structured_spec(request),
    )


def validate_request(request: dict[str, Any]) -> tuple[ProcessorRequest, SamplingFields]:
    incoming = ProcessorRequest.model_validate(request)
    kind = CompletionRequest if incoming.kind == "completion" else ChatCompletionRequest
    return incoming, kind.model_validate(incoming.request)


def load_tokenizer(model: str) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer, whose chat template is the model's own."""
    from transformers import AutoTokenizer

    from engine import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(model))


@dataclass
class Prompt:
    token_ids: list[int]
    media: list[MediaRef]


@dataclass
class Progress:
    """How far one choice got: its tokens so far, and whether its current worker replied."""

    token_ids: list[int] = field(default_factory=list)
    replied: bool = False


class Processor(Component):
    Config = ProcessorConfig
    model_type = "chat"

    async def start(self) -> None:
        self.tokenizer = await asyncio.to_thread(load_tokenizer, self.config.model)
        self.vocab_size = len(self.tokenizer)
        # Text a caller may not type: it would become a control token (a media placeholder).
        self.special_tokens = sorted(
            {t.content for t in self.tokenizer.added_tokens_decoder.values() if t.special}
            | set(self.tokenizer.all_special_tokens)
        )
        self.decoders = self.client("DecodeWorker")
        self.counts = {"migrations": 0}

    @endpoint
    async def describe(self, request: None, ctx: Context) -> AsyncIterator[dict[str, Any]]:
        """What /v1/models says of the model: its context length and input modalities."""
        media = [m for m in ("image", "video") if f"<{m}>" in self.special_tokens]
        yield {"max_model_len": self.config.max_model_len, "modalities": ["text", *media]}

    @endpoint
    async def generate(
        self, request: dict[str, Any], ctx: Context
    ) -> AsyncIterator[dict[str, Any]]:
        # Validating a request that inlines tens of MB of media takes a while: not on the loop.
        incoming, body = await asyncio.to_thread(validate_request, request)
        if isinstance(body, CompletionRequest):
            prompts = [self.completion_prompt(p) for p in body.prompts]
        else:
            prompts = [self.tokenize(body)]
        self.check_token_ids(body)
        choices = []
        for p, prompt in enumerate(prompts):
            sampling = sampling_options(body, len(prompt.token_ids), self.config.max_model_len)
            for j in range(body.n):
                seed = None if sampling.seed is None else sampling.seed + j  # as vLLM's n
                child = sampling.model_copy(update={"seed": seed})
                index = p * body.n + j
                choices.append(self.choice(body, incoming, index, prompt, child, ctx))
        usage = UsageCount(choices=len(choices), n=body.n)
        async for out in merge(choices):
            yield usage.count(out).model_dump()

    async def choice(
        self,
        body: SamplingFields,
        incoming: ProcessorRequest,
        index: int,
        prompt: Prompt,
        sampling: SamplingOptions,
        ctx: Context,
    ) -> AsyncIterator[ProcessorOutput]:
        generate = GenerateRequest(
            request_id=incoming.request_id if index == 0 else f"{incoming.request_id}-{index}",
            prompt_token_ids=prompt.token_ids,
            media=prompt.media,
            media_io_kwargs=body.media_io_kwargs,
            sampling=sampling,
            report_stages=incoming.report_stages,
        )
        detokenizer = Detokenizer(
            self.tokenizer,
            sampling.stop,
            skip_special_tokens=body.skip_special_tokens,
            include_stop=body.include_stop_str_in_output,
        )
        progress = Progress()
        # KV-aware routing: a conversation about the same video goes back to the decode
        # worker whose prefix cache holds its KV (with `router: cache-aware`).
        route_key = await asyncio.to_thread(generate.media_key) if generate.media else None
        for migration in range(self.config.migration_limit + 1):
            progress.replied = False
            resend = generate.model_copy(update={"generated_token_ids": progress.token_ids})
            replies = self.decoders.stream(
                "generate", resend.model_dump(), deadline_s=ctx.time_left(), route_key=route_key
            )
            try:
                async for output in self.outputs(body, index, replies, detokenizer, progress):
                    yield output
                return
            except WorkerLost as error:
                # Lost before any reply, the client already tried the other instances;
                # with every token streamed, only the finish was lost: nothing to move.
                left = sampling.max_tokens - len(progress.token_ids)
                if not progress.replied or migration == self.config.migration_limit or left <= 0:
                    raise
                self.counts["migrations"] += 1
                log.warning(
                    "decode worker lost %s after %d tokens (%s); migrating it (%d of %d)",
                    generate.request_id,
                    len(progress.token_ids),
                    error,
                    migration + 1,
                    self.config.migration_limit,
                )

    async def outputs(
        self,
        body: SamplingFields,
        index: int,
        replies: AsyncIterator[dict[str, Any]],
        detokenizer: Detokenizer,
        progress: Progress,
    ) -> AsyncIterator[ProcessorOutput]:
        """One decode worker's replies as this choice's outputs, until the choice finishes."""
        async with aclosing(replies):
            async for message in replies:
                progress.replied = True
                out = TokenOutput.model_validate(message)
                if out.stage is not None:
                    yield ProcessorOutput(index=index, text="", token_ids=[], stage=out.stage)
                    continue
                progress.token_ids += out.token_ids
                generated = len(progress.token_ids)
                text = detokenizer.add(out.token_ids, match_stop=generated >= body.min_tokens)
                finish = "stop" if detokenizer.stopped else out.finish_reason
                if finish is not None:
                    text += detokenizer.flush()
                yield ProcessorOutput(
                    index=index,
                    text=text,
                    token_ids=out.token_ids,
                    logprobs=self.openai_logprobs(body, out) if out.logprobs is not None else None,
                    finish_reason=finish,
                    prompt_tokens=out.prompt_tokens,
                    completion_tokens=generated,
                )
                if finish is not None:
                    return

    def tokenize(self, chat: ChatCompletionRequest) -> Prompt:
        messages, media = render_messages(chat.messages)
        if len(media) > self.config.max_media_per_prompt:
            raise _bad_request(
                f"the prompt has {len(media)} videos/images; this server takes at most "
                f"{self.config.max_media_per_prompt} per request",
                "messages",
            )
        for text in message_texts(chat.messages):
            self.refuse_special_tokens(text, "messages")
        kwargs = chat.chat_template_kwargs or {}
        ours = {"add_generation_prompt", "continue_final_message", "tokenize", "documents"}
        if clash := sorted(ours & set(kwargs)):
            raise _bad_request(
                f"chat_template_kwargs sets {clash}; use the request fields of the same name",
                "chat_template_kwargs",
            )
        try:
            text = self.tokenizer.apply_chat_template(
                messages,
                tokenize=False,
                add_generation_prompt=chat.add_generation_prompt,
                continue_final_message=chat.continue_final_message,
                documents=chat.documents,
                **kwargs,
            )
        except Exception as error:  # the template's own checks (jinja2 raise_exception)
            raise _bad_request(f"the chat template refused the chat: {error}", "messages") from None
        prompt_ids = self.tokenizer(text, add_special_tokens=chat.add_special_tokens)["input_ids"]
        return Prompt(self.check_length(prompt_ids, "messages"), media)

    def completion_prompt(self, prompt: str | list[int]) -> Prompt:
        if isinstance(prompt, str):
            self.refuse_special_tokens(prompt, "prompt", only_media=True)
            prompt = self.tokenizer(prompt)["input_ids"]
        elif bad := [t for t in prompt if not 0 <= t < self.vocab_size]:
            raise _bad_request(
                f"token ids {bad[:5]} are outside the vocabulary (0..{self.vocab_size - 1})",
                "prompt",
            )
        media_ids = set(self.tokenizer.convert_tokens_to_ids(self.media_tokens()))
        if media_ids & set(prompt):
            raise _bad_request(
                "the prompt holds a video/image placeholder token, but text completions take "
                "no media; use /v1/chat/completions with a video_url part",
                "prompt",
            )
        return Prompt(self.check_length(prompt, "prompt"), [])

    def media_tokens(self) -> list[str]:
        return [t for t in self.special_tokens if t in ("<video>", "<image>")]

    def refuse_special_tokens(self, text: str, param: str, only_media: bool = False) -> None:
        """A control token typed as text is a 400: it would be read as one, not as text."""
        tokens = self.media_tokens() if only_media else self.special_tokens
        if found := [t for t in tokens if t in text]:
            raise _bad_request(
                f"the text contains the special token {found[0]!r}, which only the server may "
                "place; send media as video_url/image_url parts and remove the token from the text",
                param,
            )

    def check_length(self, prompt_ids: list[int], param: str) -> list[int]:
        if len(prompt_ids) >= self.config.max_model_len:
            raise _bad_request(
                f"the prompt is {len(prompt_ids)} tokens before any video is added; "
                f"the model takes {self.config.max_model_len}",
                param,
            )
        return prompt_ids

    def check_token_ids(self, body: SamplingFields) -> None:
        fields = {
            "logit_bias": [int(t) for t in body.logit_bias or {}],
            "allowed_token_ids": body.allowed_token_ids or [],
            "stop_token_ids": body.stop_token_ids,
        }
        for param, ids in fields.items():
            if bad := [t for t in ids if not 0 <= t < self.vocab_size]:
                raise _bad_request(
                    f"{param}: token ids {bad[:5]} are outside the vocabulary "
                    f"(0..{self.vocab_size - 1})",
                    param,
                )

    def stats(self) -> dict[str, float]:
        return dict(self.counts)

    def openai_logprobs(self, body: SamplingFields, out: TokenOutput) -> list[TokenLogprob]:
        def entry(token_id: int, logprob: float) -> TopLogprob:
            token = (
                f"token_id:{token_id}"
                if body.return_tokens_as_token_ids
                else self.tokenizer.decode([token_id])
            )
            return TopLogprob(token=token, logprob=logprob, bytes=list(token.encode()))

        chosen: list[TokenLogprobs] = out.logprobs or []
        return [
            TokenLogprob(
                **entry(token_id, lp.logprob).model_dump(),
                top_logprobs=[entry(tid, tlp) for tid, tlp in lp.top],
            )
            for token_id, lp in zip(out.token_ids, chosen, strict=True)
        ]


class UsageCount:
    """Request-wide usage as choices report: every choice's tokens, each prompt's once."""

    def __init__(self, choices: int, n: int) -> None:
        self.choices, self.n = choices, n
        self.prompt: dict[int, int] = {}
        self.completion: dict[int, int] = {}

    def count(self, out: ProcessorOutput) -> ProcessorOutput:
        if out.stage is None:
            self.prompt[out.index // self.n] = out.prompt_tokens
            self.completion[out.index] = out.completion_tokens
        return out.model_copy(
            update={
                "choices": self.choices,
                "usage_prompt_tokens": sum(self.prompt.values()),
                "usage_completion_tokens": sum(self.completion.values()),
            }
        )
