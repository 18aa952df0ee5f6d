"""Copies a LLaVA-NeXT-Video checkpoint into the key layout vLLM loads.

    .venv-vllm/bin/python benchmarks/vllm/convert_checkpoint.py SRC DST

transformers 5 saves the CLIP vision tower's weights as `vision_tower.embeddings.*`;
vLLM 0.32 (like the checkpoints on the hub) expects `vision_tower.vision_model.*`
and refuses the model otherwise. The tensors are copied unchanged, so vLLM serves
exactly the weights our graph serves. Runs in the vLLM venv (no project imports).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

OLD, NEW = "vision_tower.", "vision_tower.vision_model."


def vllm_key(key: str) -> str:
    if key.startswith(OLD) and not key.startswith(NEW):
        return NEW + key[len(OLD) :]
    return key


def convert(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, dirs_exist_ok=True)
    for shard in target.glob("*.safetensors"):
        tensors = load_file(shard)
        save_file({vllm_key(k): v for k, v in tensors.items()}, shard, metadata={"format": "pt"})
    index = target / "model.safetensors.index.json"
    if index.exists():
        content = json.loads(index.read_text())
        content["weight_map"] = {vllm_key(k): v for k, v in content["weight_map"].items()}
        index.write_text(json.dumps(content, indent=2))
    return target


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(convert(Path(sys.argv[1]), Path(sys.argv[2])))
