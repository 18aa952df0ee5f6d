"""Registration cache: register each torch storage with NIXL once, for as long as it lives.

Registering on every transfer costs a syscall or a pin per call, and the hot
paths (a KV pool read into again and again, a cached embedding served to many
consumers) reuse the same memory. So a registration covers a whole storage,
serves every view into it, and is dropped only when the storage is freed.
The finalizer that notices the free may run on any thread, so it only queues
the key; the owning thread deregisters on its next call.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transport.descriptor import Descriptor

# (mem_type, device_id, address, length)
Region = tuple[str, int, int, int]


@dataclass(eq=False)
class _Entry:
    handle: Any
    storage: weakref.ref
    finalizer: weakref.finalize | None = None


class RegistrationCache:
    """Maps live storages to NIXL registration handles."""

    def __init__(
        self, register: Callable[[Region], Any], deregister: Callable[[Any], None]
    ) -> None:
        self._register = register
        self._deregister = deregister
        self._entries: dict[Region, _Entry] = {}
        self._freed: deque[tuple[Region, _Entry]] = deque()

    def ensure(self, desc: Descriptor) -> Region:
        """Registers the storage under `desc` unless it already is; returns its region."""
        self.collect()
        storage = desc.tensor.untyped_storage()
        region = (desc.mem_type, desc.device_id, storage.data_ptr(), storage.nbytes())
        entry = self._entries.get(region)
        if entry is not None and entry.storage() is storage:
            return region
        if entry is not None:
            self._drop(region, entry)
        entry = _Entry(handle=self._register(region), storage=weakref.ref(storage))
        entry.finalizer = weakref.finalize(storage, self._freed.append, (region, entry))
        self._entries[region] = entry
        return region

    def collect(self) -> None:
        """Deregisters the storages that were freed since the last call."""
        while self._freed:
            region, entry = self._freed.popleft()
            self._drop(region, entry)

    def clear(self) -> None:
        for region, entry in list(self._entries.items()):
            self._drop(region, entry)
        self._freed.clear()

    def abandon(self) -> None:
        """Forgets every registration without deregistering it.

        For when the agent that holds them is replaced: it frees them itself when
        dropped, and the next `ensure` registers each storage with the new agent.
        """
        for entry in self._entries.values():
            entry.finalizer.detach()
        self._entries.clear()
        self._freed.clear()

    def __len__(self) -> int:
        self.collect()
        return len(self._entries)

    def _drop(self, region: Region, entry: _Entry) -> None:
        if self._entries.get(region) is entry:
            del self._entries[region]
            entry.finalizer.detach()
            self._deregister(entry.handle)
