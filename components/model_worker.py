"""What the three model-running workers (encode, prefill, decode) share: which model, where.

Several workers share one host's cores on CPU deployments, and torch's default
of one intra-op thread per core makes them fight over every core at once
(decode steps were ~8x slower with two workers at two threads each than at one
thread each). `cpu-threads` bounds each worker; it does nothing on CUDA.

Each worker loads only the weights it runs (the encode worker the vision tower and
projector, prefill and decode workers the language model) and sizes its paged KV
cache from memory: `kv-cache-memory` bytes, or on CUDA `gpu-memory-utilization`
of the device (see `engine/sizing.py`). `max-num-batched-tokens` bounds the tokens
one step computes, so a long prompt is prefilled in chunks between decode steps.
Prefix caching (reusing the KV of a prompt's already computed blocks, e.g. for a
second question about the same video) is on unless `enable-prefix-caching: false`.

Across hosts, a peer pulls tensors from the address in the transfer metadata.
NIXL/UCX picks its own interfaces (`UCX_NET_DEVICES`); the tcp fallback
listens on `transport-host`, by default the address the worker advertises in
etcd, since loopback is unreachable from another host.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from runtime import ComponentConfig
from runtime.ports import free_port
from runtime.worker import ADVERTISE_ENV, LOOPBACK

if TYPE_CHECKING:
    from engine import AsyncEngine, Engine
    from engine.vllm_backend import KVRole, VllmEngine
    from transport import Connector

# Where `make install-vllm` puts vLLM's venv; VIDGRAPH_VLLM_PYTHON points elsewhere.
VLLM_PYTHON_ENV = "VIDGRAPH_VLLM_PYTHON"
VLLM_PYTHON = Path(__file__).resolve().parent.parent / ".venv-vllm" / "bin" / "python"


class ModelWorkerConfig(ComponentConfig):
    model: str = "tiny"
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    cpu_threads: int = Field(default=1, ge=1)
    max_model_len: int = Field(default=4096, ge=16)
    max_num_batched_tokens: int = Field(default=512, ge=1)
    block_size: int = Field(default=16, ge=1)
    kv_cache_memory: int | None = Field(default=None, ge=1)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    enable_prefix_caching: bool = True
    transport: Literal["auto", "nixl", "tcp"] = "auto"
    transport_host: str | None = None


class EngineWorkerConfig(ModelWorkerConfig):
    """Prefill and decode workers: which engine runs the language model.

    `engine: vllm` runs vLLM's AsyncLLM in the worker's process, with the
    worker started by the vLLM venv's interpreter; `vllm-args` are vLLM engine
    arguments in their CLI spelling (`tensor-parallel-size: 2`), passed through.
    """

    engine: Literal["native", "vllm"] = "native"
    vllm_args: dict[str, Any] = Field(default_factory=dict)

    def interpreter(self) -> str | None:
        if self.engine != "vllm":
            return None
        return os.environ.get(VLLM_PYTHON_ENV) or str(VLLM_PYTHON)


def open_transport(config: ModelWorkerConfig) -> Connector:
    """This process's connector, its tcp fallback on the address other hosts pull from."""
    from transport import Connector

    host = config.transport_host or os.environ.get(ADVERTISE_ENV, LOOPBACK)
    return Connector.get(config.transport, host=host)


async def load_engine(config: ModelWorkerConfig, max_num_seqs: int, part: str) -> Engine:
    """Loads the configured checkpoint's `part` ("vision" or "language") for this worker.

    `max_num_seqs=0`: a prefill worker, whose KV cache holds one prompt at a time.

    Importing torch, building the tiny model on first use and loading weights
    take seconds; they run in a thread so the event loop keeps the etcd lease
    alive meanwhile.
    """
    return await asyncio.to_thread(_load_engine, config, max_num_seqs, part)


def _load_engine(config: ModelWorkerConfig, max_num_seqs: int, part: str) -> Engine:
    import torch

    from engine import Engine, resolve_model
    from engine.models import Part

    if config.device == "cpu":
        torch.set_num_threads(config.cpu_threads)
    return Engine.load(
        resolve_model(config.model),
        config.device,
        config.dtype,
        max_num_seqs=max_num_seqs,
        max_model_len=config.max_model_len,
        max_num_batched_tokens=config.max_num_batched_tokens,
        block_size=config.block_size,
        kv_cache_memory=config.kv_cache_memory,
        gpu_memory_utilization=config.gpu_memory_utilization,
        enable_prefix_caching=config.enable_prefix_caching,
        parts=frozenset({Part(part)}),
    )


async def load_vllm_engine(
    config: EngineWorkerConfig, max_num_seqs: int, kv_role: KVRole | None
) -> VllmEngine:
    """Starts vLLM (a minute on a small CPU) in a thread, so the etcd lease stays alive.

    On CPU each worker's vLLM gets `cpu-threads` threads and no core pinning,
    since several workers share the host's cores, its NIXL progress thread rests
    between polls, and `enforce-eager` means no torch.compile at all. A KV
    producer's NIXL side channel listens on a free port of the address other
    hosts reach us at.
    """
    from engine import resolve_model
    from engine.vllm_backend import NIXL_PROGRESS_DELAY_ENV, VllmEngine

    if config.device == "cpu":
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        # vLLM's NIXL progress thread would poll nonstop, a core per worker.
        os.environ.setdefault(NIXL_PROGRESS_DELAY_ENV, "500")
        os.environ.setdefault("OMP_NUM_THREADS", str(config.cpu_threads))
        if config.vllm_args.get("enforce-eager") or config.vllm_args.get("enforce_eager"):
            # enforce-eager leaves vLLM's own torch.compile'd helpers (the sampler's
            # logprob ranks) compiling C++ for minutes at their first new shape.
            os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    if kv_role is not None:
        os.environ.setdefault(
            "VLLM_NIXL_SIDE_CHANNEL_HOST", os.environ.get(ADVERTISE_ENV, LOOPBACK)
        )
        os.environ.setdefault("VLLM_NIXL_SIDE_CHANNEL_PORT", str(free_port(LOOPBACK)))
    model = await asyncio.to_thread(resolve_model, config.model)
    engine = await asyncio.to_thread(
        VllmEngine.start,
        str(model),
        config.dtype,
        config.max_model_len,
        max_num_seqs,
        {**vllm_defaults(config), **config.vllm_args},
        kv_role,
    )
    await engine.warm_up()
    return engine


def vllm_defaults(config: ModelWorkerConfig) -> dict[str, Any]:
    """The worker keys vLLM has too, in vLLM's spelling; `vllm-args` win over them."""
    defaults: dict[str, Any] = {"enable-prefix-caching": config.enable_prefix_caching}
    if config.gpu_memory_utilization is not None:
        defaults["gpu-memory-utilization"] = config.gpu_memory_utilization
    if config.kv_cache_memory is not None:
        defaults["kv-cache-memory-bytes"] = config.kv_cache_memory
    return defaults


def engine_stats(engine: AsyncEngine | VllmEngine) -> dict[str, float]:
    """The engine's own counters: the native engine's KV cache, or vLLM's (`vllm_*`)."""
    native = getattr(engine, "engine", None)
    return native.stats() if native is not None else engine.stats()


def transport_stats(transport: Connector) -> dict[str, float]:
    """The connector's counters as worker stats.

    `transport_nixl` / `transport_tcp` are 1 once the backend is chosen (at first use), so a
    worker that has moved nothing yet reports 0 for both.
    """
    stats = transport.stats()
    numbers = {f"transport_{k}": float(v) for k, v in stats.items() if k != "backend"}
    chosen = {f"transport_{name}": float(stats["backend"] == name) for name in ("nixl", "tcp")}
    return {**numbers, **chosen}


def device_stats(config: ModelWorkerConfig) -> dict[str, Any]:
    """Which model runs where, for /v1/health/detailed; on CUDA, the GPU and its memory in use."""
    stats: dict[str, Any] = {"model": config.model, "device": config.device}
    if config.device.startswith("cuda"):
        import torch

        device = torch.device(config.device)
        index = device.index if device.index is not None else torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        stats |= {
            "gpu_name": torch.cuda.get_device_name(index),
            "gpu_memory_used_bytes": total - free,
            "gpu_memory_total_bytes": total,
        }
    return stats
