"""A tiny Qwen3-VL checkpoint, built deterministically, for tests and the demo.

The same idea as `engine.tiny_model`: an ordinary HF directory that
`Qwen3VLForConditionalGeneration.from_pretrained` and `AutoProcessor` load like
`Qwen/Qwen3-VL-8B-Instruct`, with every part the real one has: the ViT (patch 16,
2x2 spatial merge, temporal patch 2, learned position grid), DeepStack mergers
feeding both decoder layers, interleaved M-RoPE over (time, height, width), q/k
norms, Qwen's special tokens and chat template, and processors whose pixel
budgets let a 96x64 test video through at its own size (6 tokens per frame pair).
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import processors
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2VLImageProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

from engine.tiny_model import decoder_config, save_checkpoint, train_bpe

# Bump whenever the built checkpoint changes, so caches of older builds are not reused.
BUILDER_VERSION = 1

_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
_FACTOR = 32  # patch 16 x merge 2
# Images and video frames between 2x2 and 16x16 merged patches (64x64 to 512x512 pixels).
_MIN_PIXELS = 4 * _FACTOR * _FACTOR
_MAX_PIXELS = 256 * _FACTOR * _FACTOR

# Qwen3-VL's template for the parts vidgraph sends: media where it stands in the
# message, `<|vision_start|><|..._pad|><|vision_end|>` per item (the processor
# expands a video's pad into timestamped frames); string content accepted too.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' %}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'video' or part['type'] == 'video_url' %}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_qwen3_vl(path: Path) -> Path:
    """Writes the tiny Qwen3-VL checkpoint to `path`; the same bytes every time it runs."""
    tokenizer = _build_tokenizer()
    model = Qwen3VLForConditionalGeneration(_build_config(tokenizer))
    processor = _build_processor(tokenizer)
    return save_checkpoint(
        path, processor, model, tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
    )


def _build_tokenizer() -> PreTrainedTokenizerFast:
    backend = train_bpe(_SPECIAL_TOKENS)
    backend.post_processor = processors.ByteLevel(trim_offsets=False)  # Qwen adds no <bos>
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
    )


def _build_processor(tokenizer: PreTrainedTokenizerFast) -> Qwen3VLProcessor:
    size = {"shortest_edge": _MIN_PIXELS, "longest_edge": _MAX_PIXELS}
    image_processor = Qwen2VLImageProcessor(
        size=size, patch_size=16, temporal_patch_size=2, merge_size=2
    )
    # A video's budget covers all its frames: up to 64 frames of the largest size.
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": _MIN_PIXELS, "longest_edge": 64 * _MAX_PIXELS},
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        do_sample_frames=False,
    )
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def _build_config(tokenizer: PreTrainedTokenizerFast) -> Qwen3VLConfig:
    ids = tokenizer.convert_tokens_to_ids
    text_config = {
        **decoder_config(tokenizer),  # bos_token_id None: Qwen has no <bos>
        "head_dim": 32,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": [8, 4, 4],  # of head_dim / 2 = 16 frequencies: t, h, w
            "mrope_interleaved": True,
        },
    }
    vision_config = {
        "depth": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 4,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 128,
        "num_position_embeddings": 64,  # an 8x8 learned grid, interpolated to each image
        "deepstack_visual_indexes": [0, 1],
    }
    return Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
