"""Admission control at the frontend: a bounded number in flight, a bounded FIFO queue, a drain.

Every stage behind the frontend queues what it is sent, so these bounds are
what keep those queues (and memory) finite. A request beyond `max_inflight`
waits its turn in a FIFO queue of at most `max_queued`, for at most
`max_queue_wait_s` (then 503: the graph is too slow for it now); only a full
queue answers 429 with Retry-After. On shutdown the frontend stops admitting
(503), refuses what is still queued, and waits for what it admitted to finish.

Unless configured, both bounds are twice the graph's capacity: the requests
its live workers run at once, as they registered it (a decode worker: its
engine's max-num-seqs). Twice, so that while one batch decodes the next is
fetched, encoded and prefilled (the stages overlap, and a finished sequence's
slot is taken at once); admitting more would only park requests in the
engines' queues, which nothing bounds and no 429 comes from. As many again
wait here, in order.
"""

from __future__ import annotations

import asyncio
from collections import deque

from protocol.errors import ServiceError

HEADROOM = 2
"""Requests admitted per sequence the graph runs at once (see above)."""
FALLBACK_LIMIT = 256
"""Both bounds while no worker reports a capacity: before the first registers, and in a graph
whose workers bound nothing themselves (video generation queues its jobs in its workers)."""


def admission_limits(
    capacity: int, max_inflight: int | None = None, max_queued: int | None = None
) -> tuple[int, int]:
    """(max_inflight, max_queued): the configured ones, else from the graph's `capacity` (0:
    unknown)."""
    derived = HEADROOM * capacity or FALLBACK_LIMIT
    return (
        derived if max_inflight is None else max_inflight,
        derived if max_queued is None else max_queued,
    )


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
        self.inflight -= 1
        self._admit_waiting()
        if self.inflight == 0:
            self._idle.set()

    def resize(self, max_inflight: int, max_queued: int) -> None:
        """New bounds (the graph's capacity changed): room that opens goes to the queue at once.

        Under a lower bound, the requests already in flight finish; the next
        waiting one is admitted once fewer than the new bound remain.
        """
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self._admit_waiting()

    def _admit_waiting(self) -> None:
        while self._queue and self.inflight < self.max_inflight:
            turn = self._queue.popleft()
            if not turn.done():
                turn.set_result(None)
                self.inflight += 1
                self._idle.clear()

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
