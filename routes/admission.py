"""Admission control at the frontend: a bounded number of requests in flight, and a drain.

Every stage behind the frontend queues what it is sent, so this bound is what
keeps those queues (and memory) finite: past it a caller is told to come back
(429 with Retry-After) instead of waiting in an ever longer line. On shutdown
the frontend stops admitting (503) and waits for what it admitted to finish.
"""

from __future__ import annotations

import asyncio

from protocol.errors import ServiceError


class Admission:
    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.inflight = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def admit(self) -> None:
        """Count one more request in flight, or raise the error to answer it with."""
        if self.draining:
            raise ServiceError(
                "this frontend is shutting down; send the request to another one",
                status=503,
                type="service_unavailable",
            )
        if self.inflight >= self.max_inflight:
            raise ServiceError(
                f"the server is at its limit of {self.max_inflight} requests in flight; "
                "retry after a moment",
                status=429,
                type="rate_limit_exceeded",
            )
        self.inflight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()

    async def drain(self, timeout_s: float) -> int:
        """Admit nothing more; wait up to `timeout_s` for the admitted; return how many remain."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            pass
        return self.inflight
