"""Reads the tensors a family asked for out of a safetensors checkpoint, and nothing else.

`from_pretrained` builds the whole model before loading it; an encode worker needs
only the vision tower and projector, and a decode worker has no use for them. So a
family builds just its modules (`build`, weights left uninitialized) and loads each
from the checkpoint tensors under a name prefix. Checkpoints name the same module
differently across `transformers` versions (`language_model.model.layers...` in
`llava-hf` checkpoints, `model.language_model.layers...` when saved by 5.x), so each
module lists every prefix it may be found under, most specific first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import safe_open
from torch import nn

# module name -> the checkpoint prefixes its tensors may be stored under
Prefixes = dict[str, tuple[str, ...]]
M = TypeVar("M", bound=nn.Module)


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build(make: Callable[[], M], device: torch.device, dtype: torch.dtype) -> M:
    """Constructs a module on `device` in `dtype` without drawing random initial weights."""
    from transformers.initialization import no_init_weights

    with no_init_weights(), _default_dtype(dtype), torch.device(device):
        module = make()
    return module.eval()


def checkpoint_files(path: str | Path) -> list[Path]:
    """The safetensors files of a local checkpoint directory or a hub id (downloaded once)."""
    root = Path(path)
    if not root.is_dir():
        from huggingface_hub import snapshot_download

        root = Path(snapshot_download(str(path), allow_patterns=["*.json", "*.safetensors"]))
    index = root / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [root / name for name in names]
    files = sorted(root.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{root} holds no .safetensors weights")
    return files


def load_modules(path: str | Path, modules: dict[str, nn.Module], prefixes: Prefixes) -> None:
    """Fills every module in `modules` from the checkpoint; a missing tensor is an error.

    Tensors under none of the modules' prefixes (another part's weights) are never read.
    """
    states: dict[str, dict[str, torch.Tensor]] = {name: {} for name in modules}
    # Longest prefix first: `language_model.lm_head.` before `language_model.`.
    owners = sorted(
        ((prefix, name) for name in modules for prefix in prefixes[name]),
        key=lambda owner: -len(owner[0]),
    )
    for file in checkpoint_files(path):
        with safe_open(str(file), framework="pt") as tensors:
            for key in tensors.keys():  # noqa: SIM118 (safe_open is not a mapping)
                found = _owner(key, owners)
                if found is not None:
                    name, local = found
                    states[name][local] = tensors.get_tensor(key)
    for name, module in modules.items():
        expected = module.state_dict()
        missing = sorted(set(expected) - set(states[name]))
        if missing:
            raise ValueError(
                f"{path} has no weights for {name} ({', '.join(missing[:3])}, ...): is it a "
                "checkpoint of this model family?"
            )
        with torch.no_grad():
            for local, tensor in states[name].items():
                if local in expected:
                    expected[local].copy_(tensor)


def _owner(key: str, owners: list[tuple[str, str]]) -> tuple[str, str] | None:
    for prefix, name in owners:
        if key.startswith(prefix):
            return name, key[len(prefix) :]
    return None
