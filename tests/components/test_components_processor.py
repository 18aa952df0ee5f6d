"""The processor's pure steps: chat to template messages, OpenAI sampling to engine sampling."""

import pytest

from components.processor import render_messages, sampling_options
from protocol.errors import ServiceError
from protocol.openai import ChatCompletionRequest


def request(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def test_media_parts_become_placeholders_in_prompt_order() -> None:
    chat = request(
        messages=[
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": "https://a/1.mp4"}},
                    {"type": "text", "text": "and"},
                    {"type": "image_url", "image_url": {"url": "https://a/2.png"}},
                ],
            },
        ]
    )

    messages, media = render_messages(chat.messages)

    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[1]["content"] == [
        {"type": "video"},
        {"type": "text", "text": "and"},
        {"type": "image"},
    ]
    assert [(m.url, m.modality) for m in media] == [
        ("https://a/1.mp4", "video"),
        ("https://a/2.png", "image"),
    ]


def test_sampling_follows_vllm_defaults_and_extensions() -> None:
    options = sampling_options(
        request(top_k=0, logprobs=True, top_logprobs=3, ignore_eos=True, stop="END"), 10, 100
    )
    assert options.max_tokens == 90  # no max_tokens: the rest of the context
    assert (options.temperature, options.top_p, options.top_k) == (1.0, 1.0, -1)
    assert (options.logprobs, options.ignore_eos, options.stop) == (3, True, ["END"])
    assert sampling_options(request(max_completion_tokens=5, max_tokens=7), 10, 100).max_tokens == 5
    assert sampling_options(request(), 10, 100).logprobs is None


def test_max_tokens_beyond_the_context_is_a_400_naming_the_room_left() -> None:
    with pytest.raises(ServiceError) as caught:
        sampling_options(request(max_tokens=95), 10, 100)
    assert caught.value.status == 400 and caught.value.param == "max_tokens"
    assert "at most 90" in caught.value.message
