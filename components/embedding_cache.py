"""An LRU cache of embeddings bounded by bytes, not entries; and single-flight for misses.

Videos differ wildly in how many embedding rows they produce, so a count bound
would either waste memory on short clips or overflow on long ones.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from engine.models import MediaEmbedding
    from media import VideoSampling


def sampling_tag(modality: str, sampling: VideoSampling | None) -> str:
    """How media becomes frames: a video's sampling; an image has none."""
    return sampling.cache_key() if modality == "video" and sampling is not None else "image"


def embedding_key(data: bytes, tag: str, model: str) -> str:
    """What an embedding depends on: the media's bytes, its `sampling_tag`, the model."""
    return f"{hashlib.sha256(data).hexdigest()}|{tag}|{model}"


class EmbeddingCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, MediaEmbedding] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> MediaEmbedding | None:
        tensor = self._entries.get(key)
        if tensor is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return tensor

    def put(self, key: str, tensor: MediaEmbedding) -> None:
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
    def _nbytes(item: MediaEmbedding) -> int:
        tensors = [item.embeddings, *item.features.values()]
        return sum(t.numel() * t.element_size() for t in tensors)


T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Concurrent calls for one key share one computation (one fetch + encode per video).

    The computation runs as its own task: a caller that gives up (cancelled,
    deadline) does not cancel it for the others, and its result still lands in
    the cache. `shared` counts the calls that waited on another's computation.
    """

    def __init__(self) -> None:
        self.shared = 0
        self._flights: dict[Hashable, asyncio.Task[T]] = {}

    async def run(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """`compute()`'s result, and whether it came from a call already in flight."""
        flight = self._flights.get(key)
        shared = flight is not None
        if flight is None:
            flight = asyncio.ensure_future(compute())
            self._flights[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done))
        else:
            self.shared += 1
        return await asyncio.shield(flight), shared

    def _landed(self, key: Hashable, flight: asyncio.Task[T]) -> None:
        self._flights.pop(key, None)
        if not flight.cancelled():
            flight.exception()  # retrieved here too, in case every caller gave up waiting
