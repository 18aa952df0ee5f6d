"""The in-flight frame budget: how many frames of /v1/frames requests the graph holds at once.

One 7,000-frame request must not take the graph from everyone else. All frames
requests together have at most `limit` frames in the graph, and each active
request an equal share of them (`limit // active`, at least one): a request
alone may use the whole budget, and when a second arrives the first's share
halves as its frames finish, so the newcomer waits about one frame's time, not
for the big one to end. Every request always gets at least one frame in, so
the budget can be exceeded by the number of requests active beyond `limit`.
Chat and inference requests are not counted here: a frames request takes one
`max-inflight` slot, and the budget bounds what it puts on the workers, so keep
`frames-in-flight` well below the decode workers' batch size for chat to keep
its room.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class FrameBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._in_flight: dict[object, int] = {}
        self._changed = asyncio.Condition()

    def share(self) -> int:
        """Frames each active request may have in flight now."""
        return max(1, self.limit // max(1, len(self._in_flight)))

    @property
    def in_flight(self) -> int:
        return sum(self._in_flight.values())

    @contextlib.asynccontextmanager
    async def request(self) -> AsyncIterator[object]:
        """Join as one request for the duration of the block; yields its key for `frame`."""
        key = object()
        self._in_flight[key] = 0
        try:
            yield key
        finally:
            del self._in_flight[key]
            async with self._changed:
                self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def frame(self, key: object) -> AsyncIterator[None]:
        """Hold one frame's place for the duration of the block, waiting for the request's share."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._may_start(key))
            self._in_flight[key] += 1
        try:
            yield
        finally:
            async with self._changed:
                self._in_flight[key] -= 1
                self._changed.notify_all()

    def _may_start(self, key: object) -> bool:
        mine = self._in_flight[key]
        return mine == 0 or (mine < self.share() and self.in_flight < self.limit)
