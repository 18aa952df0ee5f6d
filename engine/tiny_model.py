"""A tiny LLaVA-NeXT-Video checkpoint, built deterministically, for tests and demos.

No model hub is reachable where vidgraph is tested, so we build the smallest
checkpoint that still exercises every real code path: an ordinary HF directory
(config, safetensors, tokenizer with a chat template, processor configs) that
`from_pretrained` loads like any downloaded model. Its text is nonsense; its
tokens are exact, so engines and graphs can be compared token for token.

Weights are drawn with std 0.2 rather than HF's default 0.02: at 0.02 every
logit is nearly equal and the model repeats one token whatever the input, which
would let a broken video path pass the tests unnoticed.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaNextImageProcessor,
    LlavaNextVideoConfig,
    LlavaNextVideoForConditionalGeneration,
    LlavaNextVideoProcessor,
    LlavaNextVideoVideoProcessor,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
)

# Bump whenever the built checkpoint changes, so caches of older builds are not reused.
BUILDER_VERSION = 2

TINY = "tiny"
_SEED = 0
_INIT_STD = 0.2
_IMAGE_SIZE = 64
_PATCH_SIZE = 8
_VOCAB_SIZE = 384
_SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<video>", "<image>"]

# Training text for the tokenizer: fixed, so the merges (and token ids) never change.
_CORPUS = """\
USER: What happens in this video? ASSISTANT: A person walks across the room and opens the door.
USER: Describe the video in detail. ASSISTANT: The camera pans over a green field while a dog runs.
USER: How many people are there? ASSISTANT: There are two people talking near the window.
USER: What color is the car? ASSISTANT: The car is red and it drives down the street at night.
Summarize the scene. The video shows a kitchen, a table, a cup of coffee and a cat on a chair.
What is the man doing? He is riding a bicycle in the park on a sunny afternoon.
Is it raining? No, the sky is clear and the sun is shining over the mountains.
"""


def vicuna_chat_template(*media: str) -> str:
    """Vicuna's USER/ASSISTANT turns as the llava-hf checkpoints write them: each media part's
    `<kind>` placeholder on its own line before the text, one `media` kind after another;
    extended so that a message's content may also be a plain string, as OpenAI clients send it.
    """
    placeholders = "".join(
        f"{{% for part in message['content'] | selectattr('type', 'equalto', '{kind}') %}}"
        f"{{{{ '<{kind}>\n' }}}}{{% endfor %}}"
        for kind in media
    )
    return (
        "{% for message in messages %}"
        "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
        "{% if message['content'] is string %}{{ message['content'] + ' ' }}"
        "{% else %}"
        f"{placeholders}"
        "{% for part in message['content'] | selectattr('type', 'equalto', 'text') %}"
        "{{ part['text'] + ' ' }}{% endfor %}"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
    )


# LLaVA-NeXT-Video's template: images, then videos, then the text of each turn.
CHAT_TEMPLATE = vicuna_chat_template("image", "video")


@dataclass(frozen=True)
class TinyModel:
    """A built-in tiny checkpoint: the `model:` name that selects it, and how to build it."""

    name: str
    version: int
    build: Callable[[Path], Path]


def resolve_model(name_or_path: str) -> Path | str:
    """Turns a config's `model:` value into something `from_pretrained` accepts.

    A tiny model's name (`"tiny"`, `"tiny-qwen3-vl"`, `"tiny-wan"`, `"tiny-wan-i2v"`, see
    `TINY_FAMILIES`) is built once into a cache directory shared by every worker process;
    anything else is passed through as an HF id or local path.
    """
    tiny = next((t for t in TINY_FAMILIES.values() if t.name == name_or_path), None)
    if tiny is None:
        return name_or_path
    cache_root = Path(os.environ.get("VIDGRAPH_CACHE", Path.home() / ".cache" / "vidgraph"))
    target = cache_root / f"{tiny.name}-{tiny.version}"
    if target.exists():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    # Several workers may start at once: the first to take the lock builds, the others
    # wait and then find the finished directory. The build lands under a temporary
    # name and is renamed into place, so nobody ever sees a half-written checkpoint.
    with open(cache_root / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            staging = cache_root / f"{target.name}.building-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            tiny.build(staging)
            staging.rename(target)
    return target


def build_tiny_model(path: Path) -> Path:
    """Writes the tiny checkpoint to `path`; the same bytes every time it runs."""
    tokenizer = _build_tokenizer()
    model = LlavaNextVideoForConditionalGeneration(_build_config(tokenizer))
    return save_checkpoint(path, _build_processor(tokenizer), model, tokenizer.pad_token_id)


def save_checkpoint(
    path: Path,
    processor: ProcessorMixin,
    model: PreTrainedModel,
    pad_token_id: int,
    **generation: int,
) -> Path:
    """Draws `model`'s weights (`init_weights`) and writes it with `processor` as an HF
    checkpoint directory at `path`. `pad_token_id` and any other `generation` keys go into
    its generation config. Every tiny transformers family ends its build here."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(path)
    init_weights(model)
    model.generation_config.pad_token_id = pad_token_id
    for key, value in generation.items():
        setattr(model.generation_config, key, value)
    model.save_pretrained(path)
    return path


def train_bpe(
    special_tokens: list[str],
    vocab_size: int = _VOCAB_SIZE,
    corpus: str = _CORPUS,
    unk_token: str | None = None,
) -> Tokenizer:
    """A byte-level BPE trained on a fixed corpus: any text round-trips, the same ids every
    time, and the vocabulary stays a few hundred tokens. Every tiny family's tokenizer."""
    backend = Tokenizer(models.BPE(unk_token=unk_token))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus.splitlines(), trainer=trainer)
    return backend


def prepend_bos(backend: Tokenizer, bos: str = "<s>") -> None:
    """Like Llama and Mistral: every encoded prompt starts with `bos`, so `processor(text=...)`
    and `tokenizer(text)` give the ids the model expects."""
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A",
        pair=f"{bos} $A {bos} $B",
        special_tokens=[(bos, backend.token_to_id(bos))],
    )


def decoder_config(tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    """The size and special tokens of every tiny family's decoder, as config keywords."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
    }


def clip_config(image_size: int = _IMAGE_SIZE, patch_size: int = _PATCH_SIZE) -> CLIPVisionConfig:
    """The CLIP tower of both tiny LLaVA families."""
    return CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=64,
    )


def _build_tokenizer() -> PreTrainedTokenizerFast:
    backend = train_bpe(_SPECIAL_TOKENS)
    prepend_bos(backend)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"video_token": "<video>", "image_token": "<image>"},
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
    )


def _build_processor(tokenizer: PreTrainedTokenizerFast) -> LlavaNextVideoProcessor:
    crop = {"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": _IMAGE_SIZE},
        crop_size=crop,
        image_grid_pinpoints=[[_IMAGE_SIZE, 2 * _IMAGE_SIZE], [2 * _IMAGE_SIZE, _IMAGE_SIZE]],
    )
    video_processor = LlavaNextVideoVideoProcessor(
        size={"shortest_edge": _IMAGE_SIZE}, crop_size=crop
    )
    return LlavaNextVideoProcessor(
        video_processor=video_processor,
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        patch_size=_PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, which "default" then drops
    )


def _build_config(tokenizer: PreTrainedTokenizerFast) -> LlavaNextVideoConfig:
    patches_per_frame = (_IMAGE_SIZE // _PATCH_SIZE) ** 2
    return LlavaNextVideoConfig(
        text_config=LlamaConfig(**decoder_config(tokenizer)),
        vision_config=clip_config(),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=[[_IMAGE_SIZE, 2 * _IMAGE_SIZE], [2 * _IMAGE_SIZE, _IMAGE_SIZE]],
        image_seq_length=patches_per_frame,
        video_seq_length=patches_per_frame // 4,
    )


@torch.no_grad()
def init_weights(model: torch.nn.Module) -> None:
    """Redraws every parameter from one seeded generator, in name order, for byte-identical builds.

    Norm scales stay at one (`*norm*` / `*layer_norm*` weights) and biases at zero, as a
    trained model would roughly have them; everything else is N(0, 0.2).
    """
    generator = torch.Generator().manual_seed(_SEED)
    for name, param in sorted(model.named_parameters()):
        if "norm" in name and name.endswith("weight"):
            param.fill_(1.0)
        elif name.endswith("bias"):
            param.zero_()
        else:
            param.copy_(torch.randn(param.shape, generator=generator) * _INIT_STD)


def _tiny_families() -> dict[str, TinyModel]:
    # The family builders import this module's helpers, so they are imported here, late.
    from engine import tiny_llava_next, tiny_qwen3_vl, tiny_wan

    return {
        "llava-next-video": TinyModel(TINY, BUILDER_VERSION, build_tiny_model),
        "llava-next": TinyModel(
            "tiny-llava-next",
            tiny_llava_next.BUILDER_VERSION,
            tiny_llava_next.build_tiny_llava_next,
        ),
        "llava-next-vicuna": TinyModel(
            "tiny-llava-next-vicuna",
            tiny_llava_next.BUILDER_VERSION,
            tiny_llava_next.build_tiny_llava_next_vicuna,
        ),
        "qwen3-vl": TinyModel(
            "tiny-qwen3-vl", tiny_qwen3_vl.BUILDER_VERSION, tiny_qwen3_vl.build_tiny_qwen3_vl
        ),
        "wan": TinyModel("tiny-wan", tiny_wan.BUILDER_VERSION, tiny_wan.build_tiny_wan),
        "wan-i2v": TinyModel("tiny-wan-i2v", tiny_wan.BUILDER_VERSION, tiny_wan.build_tiny_wan_i2v),
    }


# `vidgraph make-tiny-model DIR --family F` builds TINY_FAMILIES[F]; `model: NAME` resolves it.
TINY_FAMILIES: dict[str, TinyModel] = _tiny_families()
