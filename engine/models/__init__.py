"""Model families behind one interface (`interface.py`), looked up by HF architecture."""

from engine.models.interface import (
    ALL_PARTS,
    Attention,
    KVSpec,
    MediaEmbedding,
    ModelFamily,
    Part,
    Prompt,
    PromptInputs,
)
from engine.models.registry import family_for

__all__ = [
    "ALL_PARTS",
    "Attention",
    "KVSpec",
    "MediaEmbedding",
    "ModelFamily",
    "Part",
    "Prompt",
    "PromptInputs",
    "family_for",
]
