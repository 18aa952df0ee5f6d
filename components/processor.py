"""Processor: turns an OpenAI chat request into token ids, and token ids back into text.

The story of a request here:
1. render the chat with the model's own chat template, one placeholder per
   video or image, and tokenize it exactly as the model's HF processor would;
2. check what can be checked before any worker spends time on it (media count,
   prompt length, sampling options);
3. route it to a DecodeWorker and stream the generated token ids back,
   detokenized incrementally, cutting at stop strings (and, when the request
   asked for them, the graph's stage reports as they come).
Images are sent as one-frame videos: LLaVA-NeXT-Video encodes both the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from pydantic import Field

from components.detokenizer import Detokenizer
from protocol.errors import ServiceError
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
    TextPart,
    TokenLogprob,
    TopLogprob,
    VideoUrlPart,
)
from runtime import Component, ComponentConfig, Context, endpoint

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class ProcessorConfig(ComponentConfig):
    model: str = "tiny"
    max_model_len: int = Field(default=4096, ge=16)
    max_media_per_prompt: int = Field(default=4, ge=0)


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
                parts.append({"type": "video"})
                media.append(MediaRef(url=part.image_url.url, modality="image"))
        rendered.append({"role": message.role, "content": parts})
    return rendered, media


def sampling_options(
    request: ChatCompletionRequest, prompt_len: int, max_model_len: int
) -> SamplingOptions:
    """OpenAI's sampling fields resolved to what the engine runs, with vLLM's defaults."""
    room = max_model_len - prompt_len
    limit = request.token_limit
    if limit is not None and limit > room:
        raise ServiceError(
            f"max_tokens is {limit}, but the prompt already uses {prompt_len} of the "
            f"model's {max_model_len} tokens; ask for at most {room}",
            status=400,
            type="invalid_request_error",
            param="max_tokens",
        )
    temperature = 1.0 if request.temperature is None else request.temperature
    return SamplingOptions(
        max_tokens=limit or room,
        temperature=temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        top_k=-1 if request.top_k in (None, 0) else request.top_k,
        seed=request.seed,
        stop=request.stop_strings,
        ignore_eos=request.ignore_eos,
        logprobs=(request.top_logprobs or 0) if request.logprobs else None,
    )


def load_tokenizer(model: str) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer, whose chat template is the model's own."""
    from transformers import AutoTokenizer

    from engine import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(model))


class Processor(Component):
    Config = ProcessorConfig
    model_type = "chat"

    async def start(self) -> None:
        self.tokenizer = await asyncio.to_thread(load_tokenizer, self.config.model)
        self.decoders = self.client("DecodeWorker")

    @endpoint
    async def generate(
        self, request: dict[str, Any], ctx: Context
    ) -> AsyncIterator[dict[str, Any]]:
        incoming = ProcessorRequest.model_validate(request)
        chat = ChatCompletionRequest.model_validate(incoming.request)
        prompt_ids, media = self.tokenize(chat)
        sampling = sampling_options(chat, len(prompt_ids), self.config.max_model_len)
        generate = GenerateRequest(
            request_id=incoming.request_id,
            prompt_token_ids=prompt_ids,
            media=media,
            media_io_kwargs=chat.media_io_kwargs,
            sampling=sampling,
            report_stages=incoming.report_stages,
        )
        detokenizer = Detokenizer(self.tokenizer, sampling.stop)
        completion_tokens = 0
        replies = self.decoders.stream(
            "generate", generate.model_dump(), deadline_s=ctx.time_left()
        )
        async with aclosing(replies):
            async for message in replies:
                out = TokenOutput.model_validate(message)
                if out.stage is not None:
                    yield ProcessorOutput(text="", token_ids=[], stage=out.stage).model_dump()
                    continue
                completion_tokens += len(out.token_ids)
                text = detokenizer.add(out.token_ids)
                finish = "stop" if detokenizer.stopped else out.finish_reason
                if finish is not None:
                    text += detokenizer.flush()
                yield ProcessorOutput(
                    text=text,
                    token_ids=out.token_ids,
                    logprobs=self.openai_logprobs(chat, out) if chat.logprobs else None,
                    finish_reason=finish,
                    prompt_tokens=out.prompt_tokens,
                    completion_tokens=completion_tokens,
                ).model_dump()
                if finish is not None:
                    return

    def tokenize(self, chat: ChatCompletionRequest) -> tuple[list[int], list[MediaRef]]:
        messages, media = render_messages(chat.messages)
        if len(media) > self.config.max_media_per_prompt:
            raise ServiceError(
                f"the prompt has {len(media)} videos/images; this server takes at most "
                f"{self.config.max_media_per_prompt} per request",
                status=400,
                type="invalid_request_error",
                param="messages",
            )
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        prompt_ids = self.tokenizer(text)["input_ids"]
        if len(prompt_ids) >= self.config.max_model_len:
            raise ServiceError(
                f"the prompt is {len(prompt_ids)} tokens before any video is added; "
                f"the model takes {self.config.max_model_len}",
                status=400,
                type="invalid_request_error",
                param="messages",
            )
        return prompt_ids, media

    def openai_logprobs(self, chat: ChatCompletionRequest, out: TokenOutput) -> list[TokenLogprob]:
        def entry(token_id: int, logprob: float) -> TopLogprob:
            token = (
                f"token_id:{token_id}"
                if chat.return_tokens_as_token_ids
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
