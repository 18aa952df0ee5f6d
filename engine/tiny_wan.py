"""Tiny Wan 2.1 checkpoints, text- and image-to-video, built deterministically for tests.

The same idea as `engine.tiny_model` for the diffusion side: no hub is
reachable, so we build the smallest `diffusers` checkpoint directory that
`WanPipeline.from_pretrained` loads like the real `Wan-AI/Wan2.1-T2V-1.3B-Diffusers`
(transformer, `AutoencoderKLWan`, a UMT5 text encoder with its tokenizer, and
the UniPC flow scheduler the real one uses), and its image-to-video sibling
(`WanImageToVideoPipeline`, as `Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`). The
shapes follow diffusers' own Wan pipeline tests: a 32x32, 5-frame video is a
2x4x4 latent and a handful of tokens, so a few denoising steps take well under
a second on one CPU core. Their videos are noise; they are exact, so the graph
can be compared frame by frame with the pipeline run in-process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import processors
from transformers import PreTrainedTokenizerFast

from engine.tiny_model import train_bpe

# Bump whenever the built checkpoint changes, so caches of older builds are not reused.
BUILDER_VERSION = 1

_SEED = 0
_VOCAB_SIZE = 320
_TEXT_DIM = 32
_IMAGE_DIM = 4  # the CLIP vision encoder's width: the I2V transformer's image_dim
_CORPUS = """\
A cat walks along a sunny beach at golden hour, waves rolling in.
A red car drives down a rainy city street at night, neon lights reflecting.
Aerial view of a green forest in autumn, leaves falling slowly in the wind.
Two people talk near a window while snow falls outside, warm light, close-up.
A timelapse of clouds moving over mountains, wide shot, cinematic colour grading.
"""


def build_tiny_wan(path: Path) -> Path:
    """Writes the tiny Wan checkpoint to `path`; the same bytes every time it runs."""
    from diffusers import WanPipeline

    pipeline = WanPipeline(**_shared_components(), transformer=_transformer(in_channels=16))
    pipeline.save_pretrained(path)
    return Path(path)


def build_tiny_wan_i2v(path: Path) -> Path:
    """Writes the tiny image-to-video Wan to `path`; the same bytes every time it runs.

    As `Wan-AI/Wan2.1-I2V-14B-480P-Diffusers` is to the T2V model: the same VAE,
    text encoder and scheduler, a CLIP vision encoder with its image processor for
    the reference image, and a transformer that also reads the image's latents
    (16 + 4 mask + 16 channels in) and its CLIP features (`image_dim`). The
    encoder's shapes are diffusers' own `WanImageToVideoPipeline` tests'.
    """
    from diffusers import WanImageToVideoPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    # diffusers' test encoder: 2 layers of width _IMAGE_DIM, one patch per pixel of 32x32.
    vision = CLIPVisionConfig(hidden_size=_IMAGE_DIM, num_attention_heads=2, projection_dim=4)
    vision.update(
        {"num_hidden_layers": 2, "intermediate_size": 16, "image_size": 32, "patch_size": 1}
    )
    torch.manual_seed(_SEED)
    image_encoder = CLIPVisionModelWithProjection(vision)
    pipeline = WanImageToVideoPipeline(
        **_shared_components(),
        transformer=_transformer(in_channels=36, image_dim=_IMAGE_DIM),
        image_encoder=image_encoder,
        image_processor=CLIPImageProcessor(crop_size=32, size=32),
    )
    pipeline.save_pretrained(path)
    return Path(path)


def _shared_components() -> dict[str, Any]:
    """What both tiny Wans share: tokenizer, UMT5 text encoder, VAE and flow scheduler."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = _build_tokenizer()
    torch.manual_seed(_SEED)
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    torch.manual_seed(_SEED)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=_TEXT_DIM,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    return {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "vae": vae,
        "scheduler": scheduler,
    }


def _transformer(in_channels: int, image_dim: int | None = None) -> Any:
    from diffusers import WanTransformer3DModel

    torch.manual_seed(_SEED)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=in_channels,
        out_channels=16,
        text_dim=_TEXT_DIM,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        image_dim=image_dim,
    )


def _build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE ending every text with `</s>`, as UMT5's tokenizer does."""
    backend = train_bpe(["<pad>", "</s>", "<unk>"], _VOCAB_SIZE, _CORPUS, unk_token="<unk>")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", backend.token_to_id("</s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=512,
    )
