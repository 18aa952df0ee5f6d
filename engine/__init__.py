"""The native engine: paged KV, chunked prefill mixed with decodes, prefix caching.

Model families live in `engine/models/` behind one interface; the rest (block
manager, scheduler, KV cache, attention, runner, sampler) knows no model.

engine = Engine.load(resolve_model("tiny"), device="cpu", dtype="float32")
embeddings = engine.encode_video(frames)
engine.add_request("r1", prompt_token_ids, [embeddings], SamplingParams(max_tokens=32))
while engine.has_unfinished():
    for output in engine.step(): ...
"""

from engine.async_engine import AsyncEngine
from engine.kv_cache import KV_LAYOUT, SequenceKV
from engine.llm_engine import Engine
from engine.sampling import SamplingParams
from engine.sequence import StepOutput
from engine.tiny_model import build_tiny_model, resolve_model

__all__ = [
    "KV_LAYOUT",
    "AsyncEngine",
    "Engine",
    "SamplingParams",
    "SequenceKV",
    "StepOutput",
    "build_tiny_model",
    "resolve_model",
]
