"""Every shipped config fits the device it names: weights + KV cache + activations.

Each model-running worker is counted as the engine sizes it: the weights of the
part it loads (parameters counted on the meta device from the model's config, so
no checkpoint is needed), its KV cache (`kv-cache-memory`; on CUDA what
`gpu-memory-utilization` leaves after weights and activations, which must hold one
max-model-len sequence; on CPU `max-num-seqs` x `max-model-len` tokens), and a
worst-case bound on one step's activations. CUDA configs run one worker per GPU
(`deploy/k8s`: one `nvidia.com/gpu` per pod) on an 80 GB GPU; CPU configs run all
their workers on one host, counted against CI's 24 GiB with 1 GiB per process for
Python, torch and transformers. Model configs of hub checkpoints are kept in
`model_configs/` (no hub is reachable here); a model without one is skipped, by
name, so a new config says what it lacks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoConfig, AutoModelForImageTextToText

from engine import resolve_model
from engine.sizing import DEFAULT_GPU_MEMORY_UTILIZATION
from runtime.config import load_config
from runtime.graph import load_graph

GiB = 1 << 30
GPU_BYTES = 80 * 10**9  # an 80 GB GPU (H100 / A100 80GB)
CPU_HOST_BYTES = 24 * GiB  # the CI machine
PROCESS_BYTES = GiB  # Python, torch and transformers in each worker process
ROOT = Path(__file__).resolve().parents[2]
MODEL_CONFIGS = Path(__file__).parent / "model_configs"
WORKERS = {"EncodeWorker": "vision", "PrefillWorker": "language", "DecodeWorker": "language"}
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def shipped_configs() -> list[Path]:
    return sorted((ROOT / "configs").glob("*.yaml")) + [ROOT / "deploy/k8s/config.yaml"]


def graph_of(path: Path) -> str:
    """The graph a config is for, by its name (video generation has no language worker)."""
    for graph in ("agg", "videogen"):
        if path.name.startswith(graph):
            return f"graphs.{graph}"
    return "graphs.disagg"


def graph_yaml(path: Path, tmp_path: Path) -> Path:
    """The graph config itself: the k8s ConfigMap carries it as `data: graph.yaml`."""
    document = yaml.safe_load(path.read_text())
    if document.get("kind") != "ConfigMap":
        return path
    graph = tmp_path / "graph.yaml"
    graph.write_text(document["data"]["graph.yaml"])
    return graph


def model_config(name: str):
    if name == "tiny":
        return AutoConfig.from_pretrained(resolve_model("tiny"))
    stored = MODEL_CONFIGS / f"{name.replace('/', '--')}.json"
    if not stored.exists():
        pytest.skip(f"no stored config for {name}: add its config.json as {stored.name}")
    return AutoConfig.for_model(**json.loads(stored.read_text()))


def part_parameters(config) -> dict[str, int]:
    """Parameters of the vision part (tower, projector) and the language part (the rest)."""
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    counts = {"vision": 0, "language": 0}
    for name, param in model.named_parameters():
        vision = any(word in name for word in ("vision", "visual", "projector", "image_newline"))
        counts["vision" if vision else "language"] += param.numel()
    return counts


@dataclass
class WorkerMemory:
    weights: int
    kv: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.activations


def language_worker(settings, config, params: dict[str, int], num_seqs: int) -> WorkerMemory:
    text = config.text_config
    size = BYTES[settings.dtype]
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    per_token = text.num_hidden_layers * 2 * text.num_key_value_heads * head_dim * size
    tokens, context = settings.max_num_batched_tokens, settings.max_model_len
    activations = (
        tokens * (4 * text.hidden_size + 3 * text.intermediate_size) * size  # one layer's
        + 2 * context * text.num_key_value_heads * head_dim * size  # a chunk's gathered context
        + tokens * context * text.num_attention_heads * 4  # its attention scores (SDPA math)
        + max(num_seqs, 1) * text.vocab_size * 4  # logits of the rows that sample
    )
    weights = params["language"] * size
    if settings.kv_cache_memory is not None:
        kv = settings.kv_cache_memory
    elif settings.device.startswith("cuda"):
        utilization = settings.gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION
        kv = int(GPU_BYTES * utilization) - weights - activations
    else:
        kv = max(num_seqs, 1) * context * per_token
    assert kv >= context * per_token, (
        f"the KV cache ({kv / GiB:.1f} GiB) cannot hold one max-model-len ({context}) sequence "
        f"({context * per_token / GiB:.1f} GiB)"
    )
    return WorkerMemory(weights, kv, activations)


def encode_worker(settings, config, params: dict[str, int]) -> WorkerMemory:
    vision = config.vision_config
    size = BYTES[settings.dtype]
    patches = (vision.image_size // vision.patch_size) ** 2 + 1
    tokens = settings.num_frames * patches
    activations = (
        (vision.num_hidden_layers + 1) * tokens * vision.hidden_size * size  # hidden states kept
        + tokens * (4 * vision.hidden_size + vision.intermediate_size) * size
        + settings.num_frames * vision.num_attention_heads * patches**2 * 4
    )
    cache = settings.embedding_cache_mib << 20
    return WorkerMemory(params["vision"] * size, cache, activations)


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_fits_the_device_it_names(path, tmp_path):
    graph = load_graph(graph_of(path))
    components = {component.name: component.Config for component in graph.components}
    settings = load_config(graph_yaml(path, tmp_path), components)
    host_total = 0
    for name, part in WORKERS.items():
        if name not in settings:
            continue
        worker = settings[name].config
        config = model_config(worker.model)
        params = part_parameters(config)
        if part == "vision":
            memory = encode_worker(worker, config, params)
        else:
            num_seqs = getattr(worker, "max_num_seqs", 0)
            memory = language_worker(worker, config, params, num_seqs)
        if worker.device.startswith("cuda"):
            assert memory.total <= GPU_BYTES, (
                f"{name}: {memory.weights / GiB:.1f} GiB weights + {memory.kv / GiB:.1f} GiB KV + "
                f"{memory.activations / GiB:.1f} GiB activations > an 80 GB GPU"
            )
        else:
            host_total += settings[name].workers * (memory.total + PROCESS_BYTES)
    assert host_total <= CPU_HOST_BYTES, f"{host_total / GiB:.1f} GiB > the 24 GiB host"
