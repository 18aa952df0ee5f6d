"""A tiny LLaVA-NeXT v1.6 (image) checkpoint, built deterministically, for tests and the demo.

The same idea as `engine.tiny_model`, shaped like `llava-hf/llava-v1.6-mistral-7b-hf`:
a CLIP tower, the Mistral decoder, Mistral's `[INST]` chat template (or, built by
`build_tiny_llava_next_vicuna` like `llava-hf/llava-v1.6-vicuna-7b-hf`, a Llama decoder and
Vicuna's `USER: ... ASSISTANT:` template), and anyres
tiling over the real checkpoints' five grid pinpoints scaled from 336 to 64
pixels (64x128, 128x64, 128x128, 192x64, 64x192), with `image_newline` closing
each row of tile features.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    LlamaConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    MistralConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
)

from engine.tiny_model import (
    clip_config,
    decoder_config,
    prepend_bos,
    save_checkpoint,
    train_bpe,
    vicuna_chat_template,
)

# Bump whenever the built checkpoint changes, so caches of older builds are not reused.
BUILDER_VERSION = 1

_IMAGE_SIZE = 64
_PATCH_SIZE = 8
_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<image>", "<pad>"]
# llava-v1.6's [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]], at 64 per 336.
GRID_PINPOINTS = [[64, 128], [128, 64], [128, 128], [192, 64], [64, 192]]

# Mistral-instruct's template as llava-v1.6-mistral uses it: images before the text of
# a user turn; string content accepted too.
MISTRAL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ part['text'] }}{% endfor %}{% endif %}"
    "{{ ' [/INST]' }}"
    "{% else %}"
    "{% if message['content'] is string %}{{ ' ' + message['content'] }}{% else %}"
    "{% for part in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ ' ' + part['text'] }}{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ '</s>' }}{% endif %}"
    "{% endif %}"
    "{% endfor %}"
)


# llava-v1.6-vicuna's template (`USER: <image>\n... ASSISTANT:`): images before the text.
VICUNA_CHAT_TEMPLATE = vicuna_chat_template("image")


def build_tiny_llava_next(path: Path, vicuna: bool = False) -> Path:
    """Writes the tiny LLaVA-NeXT checkpoint to `path`; the same bytes every time it runs.

    `vicuna` gives llava-v1.6-vicuna's shape (a Llama decoder, Vicuna's template) instead of
    llava-v1.6-mistral's: the two chat templates v1.6 ships with.
    """
    tokenizer = _build_tokenizer(VICUNA_CHAT_TEMPLATE if vicuna else MISTRAL_CHAT_TEMPLATE)
    text = decoder_config(tokenizer)
    text_config = (
        LlamaConfig(**text) if vicuna else MistralConfig(**text, head_dim=32, sliding_window=None)
    )
    model = LlavaNextForConditionalGeneration(_build_config(tokenizer, text_config))
    return save_checkpoint(path, _build_processor(tokenizer), model, tokenizer.pad_token_id)


def build_tiny_llava_next_vicuna(path: Path) -> Path:
    """`build_tiny_llava_next` shaped like `llava-hf/llava-v1.6-vicuna-7b-hf`."""
    return build_tiny_llava_next(path, vicuna=True)


def _build_tokenizer(chat_template: str) -> PreTrainedTokenizerFast:
    backend = train_bpe(_SPECIAL_TOKENS)
    prepend_bos(backend)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        chat_template=chat_template,
        model_max_length=4096,
    )


def _build_processor(tokenizer: PreTrainedTokenizerFast) -> LlavaNextProcessor:
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": _IMAGE_SIZE},
        crop_size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE},
        image_grid_pinpoints=GRID_PINPOINTS,
    )
    return LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
        patch_size=_PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, which "default" then drops
    )


def _build_config(
    tokenizer: PreTrainedTokenizerFast, text_config: PretrainedConfig
) -> LlavaNextConfig:
    return LlavaNextConfig(
        text_config=text_config,
        vision_config=clip_config(_IMAGE_SIZE, _PATCH_SIZE),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=GRID_PINPOINTS,
        image_seq_length=(_IMAGE_SIZE // _PATCH_SIZE) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
