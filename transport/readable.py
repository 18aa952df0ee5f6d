"""`ReadableOperation`: the producer's handle on buffers exposed to one consumer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import Enum

from transport.descriptor import Descriptor
from transport.errors import TransferError, TransferTimeout
from transport.metadata import RdmaMetadata


class ReadableState(Enum):
    LIVE = "live"
    COMPLETED = "completed"  # the consumer read everything and said so
    EXPIRED = "expired"  # the lease ran out before anyone read it
    RELEASED = "released"  # the producer gave up on it (cancelled request, shutdown)


class ReadableOperation:
    """Keeps the descriptors alive until a consumer has read them or the lease runs out.

    The connector finishes it; the producer only sends `metadata` along and may
    wait for the outcome or release it early.
    """

    def __init__(
        self,
        metadata: RdmaMetadata,
        descs: list[Descriptor],
        deadline: float,
        release: Callable[[str], None],
    ) -> None:
        self.metadata = metadata
        self.deadline = deadline
        self.state = ReadableState.LIVE
        self._descs: list[Descriptor] | None = descs
        self._release = release
        self._finished = asyncio.Event()

    @property
    def key(self) -> str:
        return self.metadata.key

    @property
    def descriptors(self) -> list[Descriptor] | None:
        """The exposed descriptors while live; None once finished (they are no longer held)."""
        return self._descs

    async def wait_for_completion(self, timeout: float | None = None) -> None:
        """Returns once a consumer has read everything; raises if that can no longer happen."""
        try:
            async with asyncio.timeout(timeout):
                await self._finished.wait()
        except TimeoutError:
            raise TransferTimeout(
                f"readable {self.key} was not read within {timeout}s (it stays live until "
                "its lease ends; call release() to free it now)"
            ) from None
        if self.state is not ReadableState.COMPLETED:
            raise TransferError(f"readable {self.key} was never read: it {self.state.value}")

    def release(self) -> None:
        """Frees the buffers now, e.g. because the request that needed them was cancelled."""
        self._release(self.key)

    def finish(self, state: ReadableState) -> None:
        """Called by the connector: drop the descriptors and wake any waiter."""
        self.state = state
        self._descs = None
        self._finished.set()
