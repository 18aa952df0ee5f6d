"""An LRU cache of embeddings bounded by bytes, not entries.

Videos differ wildly in how many embedding rows they produce, so a count bound
would either waste memory on short clips or overflow on long ones.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class EmbeddingCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> torch.Tensor | None:
        tensor = self._entries.get(key)
        if tensor is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return tensor

    def put(self, key: str, tensor: torch.Tensor) -> None:
        """Keeps `tensor` unless it alone is over the budget; evicts the least recently used."""
        size = self._nbytes(tensor)
        if size > self.max_bytes:
            return
        if key in self._entries:
            self.bytes -= self._nbytes(self._entries.pop(key))
        self._entries[key] = tensor
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= self._nbytes(evicted)

    @staticmethod
    def _nbytes(tensor: torch.Tensor) -> int:
        return tensor.numel() * tensor.element_size()
