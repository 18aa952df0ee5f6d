"""HF architecture name -> the family class that serves it, imported only when asked for.

Importing a family pulls in its `transformers` modules; the registry holds strings
so that listing what is supported costs nothing, as vLLM's `ModelRegistry` does.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from engine.models.interface import ModelFamily

ARCHITECTURES: dict[str, str] = {
    "LlavaNextVideoForConditionalGeneration": "engine.models.llava_next_video:LlavaNextVideo",
    "LlavaNextForConditionalGeneration": "engine.models.llava_next:LlavaNext",
    "Qwen3VLForConditionalGeneration": "engine.models.qwen3_vl:Qwen3VL",
}


def family_for(path: str | Path) -> type[ModelFamily]:
    """The family class for a checkpoint (directory or HF id), by its config's `architectures`."""
    architectures = _architectures(path)
    for architecture in architectures:
        if architecture in ARCHITECTURES:
            module, name = ARCHITECTURES[architecture].split(":")
            return getattr(importlib.import_module(module), name)
    raise ValueError(
        f"{path} is a {', '.join(architectures) or 'model of no declared architecture'}; "
        f"this engine serves {', '.join(sorted(ARCHITECTURES))}"
    )


def _architectures(path: str | Path) -> list[str]:
    config = Path(path) / "config.json"
    if config.exists():
        return json.loads(config.read_text()).get("architectures") or []
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path).architectures or []
