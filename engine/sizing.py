"""How many KV blocks fit: sized from memory, as vLLM does, so a worker never runs out.

Three ways, first match wins:
- `kv_cache_memory` bytes (CPU or GPU): exactly that much KV;
- on CUDA, `gpu_memory_utilization` (default 0.9) of the device, minus what is in
  use after the weights are loaded (ours and other processes'), minus the peak
  activations of a profiling forward over `max_num_batched_tokens` tokens (the
  largest step the scheduler will ever run);
- on CPU with neither: room for `max_num_seqs` (at least one) sequences of
  `max_model_len` tokens, what the slot design used to allocate.

The cache must hold at least one `max_model_len` sequence, or a request that the
length check admits could never be scheduled; that is refused at start, with the
numbers, like vLLM does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.attention import PagedAttention, SeqSlice
from engine.kv_cache import KVCache
from engine.models import ModelFamily

GiB = 1 << 30
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9


@dataclass
class KVBudget:
    max_num_seqs: int
    max_model_len: int
    max_num_batched_tokens: int
    block_size: int
    kv_cache_memory: int | None = None
    gpu_memory_utilization: float | None = None


def size_kv_cache(family: ModelFamily, budget: KVBudget) -> int:
    """The number of KV blocks for this family and budget (see the module docstring)."""
    assert family.kv_spec is not None
    block_bytes = family.kv_spec.bytes_per_token * budget.block_size
    if budget.kv_cache_memory is not None:
        memory = budget.kv_cache_memory
        source = f"kv-cache-memory {memory / GiB:.3f} GiB"
    elif family.device.type == "cuda":
        utilization = budget.gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION
        memory = _cuda_memory_for_kv(family, budget, utilization)
        source = f"gpu-memory-utilization {utilization} leaves {memory / GiB:.3f} GiB"
    else:
        tokens = max(budget.max_num_seqs, 1) * budget.max_model_len
        memory = -(-tokens // budget.block_size) * block_bytes
        source = f"{max(budget.max_num_seqs, 1)} x max-model-len {budget.max_model_len} tokens"
    num_blocks = max(memory, 0) // block_bytes
    if num_blocks * budget.block_size < budget.max_model_len:
        needed = -(-budget.max_model_len // budget.block_size) * block_bytes
        raise ValueError(
            f"{source} holds {num_blocks} KV blocks of {budget.block_size} tokens "
            f"({num_blocks * budget.block_size} tokens); one max-model-len "
            f"({budget.max_model_len}) sequence needs {needed / GiB:.3f} GiB: give the KV "
            "cache more memory or lower max-model-len"
        )
    return num_blocks


def _cuda_memory_for_kv(family: ModelFamily, budget: KVBudget, utilization: float) -> int:
    """Device bytes left for KV after the weights and one profiling forward (untested on GPU)."""
    device = family.device
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    _profile_forward(family, budget)
    torch.cuda.synchronize(device)
    free, total = torch.cuda.mem_get_info(device)
    used = total - free  # weights, the CUDA context and other processes on the device
    peak = torch.cuda.max_memory_allocated(device)
    current = torch.cuda.memory_allocated(device)
    torch.cuda.empty_cache()
    return int(total * utilization - used - (peak - current))


@torch.inference_mode()
def _profile_forward(family: ModelFamily, budget: KVBudget) -> None:
    """The largest step: `max_num_batched_tokens` tokens, logits for `max_num_seqs` rows."""
    assert family.kv_spec is not None
    tokens = budget.max_num_batched_tokens
    num_blocks = -(-tokens // budget.block_size)
    cache = KVCache(family.kv_spec, num_blocks, budget.block_size, family.device)
    ids = torch.zeros(tokens, dtype=torch.long, device=family.device)
    positions = torch.arange(tokens, device=family.device).expand(family.position_dims, -1)
    attention = PagedAttention(cache, [SeqSlice(0, tokens, tokens, list(range(num_blocks)))])
    hidden = family.forward(family.embed_tokens(ids), positions, attention, {})
    family.compute_logits(hidden[-max(budget.max_num_seqs, 1) :])
    del cache
