"""Every chat-completions field OpenAI or vLLM defines, with what vidgraph does with it.

`HONOURED` fields get a value that changes the request and must be answered
200 (with a check of the effect where one is cheap to see); `REFUSED` fields
must be a 400 whose `param` names the field. The OpenAI list is read from the
installed `openai` client, so a field it adds fails the walk until it is
placed in one of the two tables; vLLM's are listed from its
`ChatCompletionRequest` (v0.32).
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

from openai.types.chat import completion_create_params

Check = Callable[[dict[str, Any]], bool] | None

HI = [{"role": "user", "content": "hi"}]
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}


def text(answer: dict[str, Any]) -> str:
    return answer["choices"][0]["message"]["content"]


HONOURED: dict[str, tuple[Any, Check]] = {
    # OpenAI
    "model": ("tiny", None),
    "messages": (HI, None),
    "max_tokens": (2, lambda a: a["usage"]["completion_tokens"] <= 2),
    "max_completion_tokens": (1, lambda a: a["usage"]["completion_tokens"] == 1),
    "n": (2, lambda a: [c["index"] for c in a["choices"]] == [0, 1]),
    "temperature": (0.5, None),
    "top_p": (0.5, None),
    "seed": (7, None),
    "stop": (["e"], lambda a: "e" not in text(a)),
    "frequency_penalty": (1.5, None),
    "presence_penalty": (1.5, None),
    "logit_bias": ({"37": 100}, lambda a: text(a) == "AAAA"),
    "logprobs": (True, lambda a: len(a["choices"][0]["logprobs"]["content"]) >= 1),
    "top_logprobs": (
        2,
        lambda a: len(a["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 2,
    ),
    "response_format": (
        {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}},
        lambda a: text(a).startswith("{"),
    ),
    "stream": (True, None),
    "stream_options": ({"include_usage": True, "continuous_usage_stats": True}, None),
    "user": ("user-1", None),
    "metadata": ({"k": "v"}, None),
    "safety_identifier": ("user-1", None),
    "prompt_cache_key": ("k", None),
    "store": (False, None),
    "service_tier": ("auto", None),
    "modalities": (["text"], None),
    "tool_choice": ("none", None),
    # vLLM
    "top_k": (2, None),
    "min_p": (0.5, None),
    "repetition_penalty": (1.5, None),
    "stop_token_ids": ([66], None),
    "min_tokens": (3, lambda a: a["usage"]["completion_tokens"] >= 3),
    "ignore_eos": (True, lambda a: a["usage"]["completion_tokens"] == 4),
    "skip_special_tokens": (False, None),
    "include_stop_str_in_output": (True, None),
    "allowed_token_ids": ([38, 39], lambda a: set(text(a)) <= {"B", "C"}),
    "chat_template_kwargs": ({"unused": 1}, None),
    "add_generation_prompt": (False, None),
    "continue_final_message": (False, None),
    "add_special_tokens": (False, None),
    "documents": ([{"title": "t", "text": "x"}], None),
    "structured_outputs": (
        {"choice": ["yes", "no"]},
        lambda a: "yes".startswith(text(a)) or "no".startswith(text(a)),
    ),
    "guided_json": (SCHEMA, None),
    "guided_regex": ("[ab]+", lambda a: set(text(a)) <= {"a", "b"}),
    "guided_choice": (["yes", "no"], None),
    "guided_grammar": ('root ::= "x" "y"*', lambda a: text(a).startswith("x")),
    "guided_decoding_backend": ("xgrammar", None),
    "return_tokens_as_token_ids": (True, None),
    "media_io_kwargs": ({"video": {"num_frames": 4}}, None),
    "request_id": ("walk-1", lambda a: a["id"] == "chatcmpl-walk-1"),
    "include_reasoning": (True, None),
    "spaces_between_special_tokens": (True, None),
}

# What a field needs beside it to be valid at all.
COMPANIONS: dict[str, dict[str, Any]] = {
    "top_logprobs": {"logprobs": True},
    "stream_options": {"stream": True},
}

REFUSED: dict[str, Any] = {
    # OpenAI
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "functions": [{"name": "f"}],
    "function_call": "auto",
    "audio": {"voice": "alloy", "format": "wav"},
    "modalities": ["text", "audio"],
    "prediction": {"type": "content", "content": "x"},
    "reasoning_effort": "low",
    "verbosity": "low",
    "web_search_options": {},
    "store": True,
    "service_tier": "flex",
    "moderation": {"model": "omni"},
    "prompt_cache_options": {},
    "prompt_cache_retention": "24h",
    # vLLM
    "best_of": 2,
    "use_beam_search": True,
    "length_penalty": 0.5,
    "echo": True,
    "chat_template": "{{ messages }}",
    "mm_processor_kwargs": {"num_crops": 4},
    "truncate_prompt_tokens": 8,
    "prompt_logprobs": 1,
    "bad_words": ["x"],
    "logits_processors": ["my.processor"],
    "return_token_ids": True,
    "cache_salt": "s",
    "kv_transfer_params": {},
    "vllm_xargs": {"a": 1},
    "priority": 1,
    "spaces_between_special_tokens": False,
    "structural_tag": "{}",
    "guided_whitespace_pattern": " ",
    "guided_decoding_backend": "outlines",
    "suffix": "end",
    "not_a_field_anywhere": 1,
}


def openai_chat_fields() -> set[str]:
    """The fields of `client.chat.completions.create`, as the installed client defines them."""
    hints = typing.get_type_hints(completion_create_params.CompletionCreateParamsBase)
    return set(hints) | {"stream"}
