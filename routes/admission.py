"""Admission control at the frontend: a bounded number in flight, a bounded FIFO queue, a drain.

Every stage behind the frontend queues what it is sent, so these bounds are
what keep those queues (and memory) finite. A request beyond `max_inflight`
waits its turn in a FIFO queue of at most `max_queued`, for at most
`max_queue_wait_s` (then 503: the graph is too slow for it now); only a full
queue answers 429 with Retry-After. On shutdown the frontend stops admitting
(503), refuses what is still queued, and waits for what it admitted to finish.
"""

from __future__ import annotations

import asyncio
from collections import deque

from protocol.errors import ServiceError


def _draining() -> ServiceError:
    return ServiceError(
        "this frontend is shutting down; send the request to another one",
        status=503,
        type="service_unavailable",
    )


class Admission:
    def __init__(
        self, max_inflight: int, max_queued: int = 0, max_queue_wait_s: float = 30.0
    ) -> None:
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.max_queue_wait_s = max_queue_wait_s
        self.inflight = 0
        self.draining = False
        self._queue: deque[asyncio.Future[None]] = deque()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def queued(self) -> int:
        return sum(not waiter.done() for waiter in self._queue)

    async def admit(self) -> None:
        """Count one more request in flight, once there is room, or raise the error to answer."""
        if self.draining:
            raise _draining()
        if self.inflight < self.max_inflight and not self.queued:
            self.inflight += 1
            self._idle.clear()
            return
        if self.queued >= self.max_queued:
            raise ServiceError(
                f"the server is at its limit of {self.max_inflight} requests in flight and "
                f"{self.max_queued} waiting; retry after a moment",
                status=429,
                type="rate_limit_exceeded",
            )
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(turn)
        try:
            await asyncio.wait_for(asyncio.shield(turn), self.max_queue_wait_s)
        except BaseException as error:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self.leave()  # the slot came just as we gave up: pass it on
            turn.cancel()
            if isinstance(error, TimeoutError):
                raise ServiceError(
                    f"the request waited {self.max_queue_wait_s:g} s for a free slot; the "
                    "graph is busier than it can serve now, retry later",
                    status=503,
                    type="service_unavailable",
                ) from None
            raise

    def leave(self) -> None:
        """One request finished: its slot goes to the longest-waiting request, if any."""
        while self._queue:
            turn = self._queue.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()

    async def drain(self, timeout_s: float) -> int:
        """Admit nothing more; wait up to `timeout_s` for the admitted; return how many remain."""
        self.draining = True
        while self._queue:
            turn = self._queue.popleft()
            if not turn.done():
                turn.set_exception(_draining())
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            pass
        return self.inflight
