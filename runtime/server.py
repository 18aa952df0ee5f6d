"""The worker side of the request plane: one ROUTER socket, one task per request.

Every request runs its endpoint handler in its own asyncio task, so a caller's
CANCEL (or its deadline) cancels exactly that handler, and a slow stream never
holds up the others. The ROUTER refuses to send to a caller it no longer
knows (ROUTER_MANDATORY), which is how a handler learns that its caller died:
the next reply fails and the handler is cancelled instead of computing for no one.
A handler with nothing to send yet (a prefill queued behind others, a wait on
another worker) would never learn it, so every CALLER_PROBE_S each caller with
requests in flight is sent this worker's load alone, which fails just the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import zmq
import zmq.asyncio
from opentelemetry.trace import SpanKind

from protocol.errors import DeadlineExceeded, ServiceError, WorkerLost
from runtime import tracing
from runtime.secret import GraphSecret
from runtime.wire import Kind, Malformed, Outbox, Rejects, configure, parse, receive

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What a handler knows about the request it serves."""

    request_id: str
    deadline: float = field(repr=False)

    def time_left(self) -> float:
        """Seconds until the caller gives up; pass it on as `deadline_s` to downstream calls."""
        return max(0.0, self.deadline - time.monotonic())


Handler = Callable[[Any, Context], AsyncIterator[Any]]
_FROM_CALLERS = frozenset({Kind.REQUEST, Kind.CANCEL})
# How often a caller with requests in flight is checked for (see the module's doc).
# A killed caller's TCP link closes at once; a vanished host's within the heartbeat timeout.
CALLER_PROBE_S = 1.0


class EndpointServer:
    """Serves a worker's endpoints on a ROUTER bound to a free port of `host`."""

    def __init__(
        self,
        context: zmq.asyncio.Context,
        handlers: Mapping[str, Handler],
        host: str,
        secret: GraphSecret | None = None,
    ) -> None:
        self.host = host
        self._handlers = dict(handlers)
        self._socket = context.socket(zmq.ROUTER)
        configure(self._socket)
        if secret is not None:
            secret.serve_on(self._socket)
        self._socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.port = self._socket.bind_to_random_port(f"tcp://{host}")
        self._outbox = Outbox(
            self._socket,
            on_unreachable=self._forget_caller,
            trailer=lambda: [Kind.LOAD, len(self._tasks)],
        )
        self.rejects = Rejects(f"worker at {host}:{self.port}")
        self._tasks: dict[tuple[bytes, int], asyncio.Task[None]] = {}
        self._accepting = True
        # Per endpoint: requests finished, and seconds they took (for /metrics).
        self.requests: Counter[str] = Counter()
        self.request_seconds: defaultdict[str, float] = defaultdict(float)
        self._receiver = asyncio.create_task(self._receive_forever())
        self._prober = asyncio.create_task(self._probe_callers_forever())

    @property
    def inflight(self) -> int:
        """Requests being served right now."""
        return len(self._tasks)

    @property
    def receiving(self) -> asyncio.Task[None]:
        """The receive loop; if it ever ends, this server answers nothing more."""
        return self._receiver

    async def _receive_forever(self) -> None:
        async for message in receive(self._socket):
            peer = message[0]
            try:
                if len(message) != 2:
                    raise Malformed(f"{len(message) - 1} parts where one was expected")
                frames, dropped = parse(message[1], _FROM_CALLERS)
            except Malformed as error:
                self.rejects.drop(peer.hex(), 1, str(error))
                continue
            for frame in frames:
                dropped += not self._dispatch(peer, frame)
            self.rejects.drop(peer.hex(), dropped, "frames of the wrong kind or shape")

    async def _probe_callers_forever(self) -> None:
        """Check, by a send, that every caller with requests in flight is still connected."""
        while True:
            await asyncio.sleep(CALLER_PROBE_S)
            for peer in {caller for caller, _ in self._tasks}:
                self._outbox.probe(peer)

    def _dispatch(self, peer: bytes, frame: list[Any]) -> bool:
        """Start or cancel a request; False for a frame that makes no sense here."""
        kind, rid = frame[0], frame[1]
        if kind == Kind.CANCEL:
            if task := self._tasks.get((peer, rid)):
                task.cancel()
            return True
        _, _, endpoint, timeout_s, request_id, body, trace = frame
        if (peer, rid) in self._tasks or not 0 < timeout_s < float("inf"):
            return False  # a request number already in use, or a deadline that is no deadline
        context = Context(request_id, time.monotonic() + timeout_s)
        task = asyncio.create_task(self._serve(peer, rid, endpoint, body, context, trace))
        self._tasks[(peer, rid)] = task
        # `_serve` forgets itself as it ends (before its reply's LOAD count goes out), but
        # a task cancelled before its first step (a CANCEL in the same message as its
        # REQUEST) never runs its coroutine, finally included: this forgets that one.
        task.add_done_callback(partial(self._forget_task, (peer, rid)))
        return True

    def _forget_task(self, key: tuple[bytes, int], task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:  # (a hostile caller may have reused the number)
            del self._tasks[key]

    def _forget_caller(self, peer: bytes) -> None:
        """The caller disconnected: stop computing replies nobody will read."""
        log.info("a caller disconnected; cancelling its requests")
        for (caller, _), task in self._tasks.items():
            if caller == peer:
                task.cancel()

    async def _serve(
        self,
        peer: bytes,
        rid: int,
        endpoint: str,
        body: Any,
        context: Context,
        trace: dict[str, str],
    ) -> None:
        started = time.monotonic()
        try:
            with tracing.span(
                endpoint, trace, SpanKind.SERVER, **{"vidgraph.request_id": context.request_id}
            ):
                await self._stream_replies(peer, rid, endpoint, body, context)
        except asyncio.CancelledError:
            log.debug("request %s cancelled", context.request_id)
        except Exception as error:
            if not isinstance(error, ServiceError):
                log.exception("endpoint %r failed on request %s", endpoint, context.request_id)
            self._outbox.put([Kind.ERROR, rid, ServiceError.wrap(error).to_dict()], peer)
        finally:
            self._tasks.pop((peer, rid), None)
            self.requests[endpoint] += 1
            self.request_seconds[endpoint] += time.monotonic() - started

    async def _stream_replies(
        self, peer: bytes, rid: int, endpoint: str, body: Any, context: Context
    ) -> None:
        if not self._accepting:
            raise WorkerLost("this instance is shutting down; send the request to another one")
        handler = self._handlers.get(endpoint)
        if handler is None:
            raise ServiceError(
                f"no endpoint {endpoint!r} here; this worker serves {sorted(self._handlers)}",
                status=404,
                type="not_found_error",
            )
        try:
            async with asyncio.timeout_at(_loop_time(context.deadline)) as timeout:
                async with contextlib.aclosing(handler(body, context)) as replies:
                    async for reply in replies:
                        self._outbox.put([Kind.DATA, rid, reply], peer)
                        await self._outbox.room(peer)
        except TimeoutError:
            if not timeout.expired():
                raise
            raise DeadlineExceeded(
                f"endpoint {endpoint!r} did not finish within the request's deadline"
            ) from None
        self._outbox.put([Kind.END, rid], peer)

    async def drain(self, timeout_s: float) -> None:
        """Refuse new requests (WorkerLost) and give in-flight ones `timeout_s` to finish."""
        self._accepting = False
        pending = list(self._tasks.values())
        if pending:
            log.info("draining %d in-flight requests", len(pending))
            _, unfinished = await asyncio.wait(pending, timeout=timeout_s)
            for (peer, rid), task in list(self._tasks.items()):
                if task in unfinished:
                    task.cancel()
                    lost = WorkerLost("this instance shut down before the request finished")
                    self._outbox.put([Kind.ERROR, rid, lost.to_dict()], peer)
            await asyncio.gather(*unfinished, return_exceptions=True)

    async def close(self) -> None:
        for task in (self._receiver, self._prober):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._outbox.close()
        self._socket.close()


def _loop_time(monotonic_deadline: float) -> float:
    """asyncio's clock is time.monotonic on Linux, but convert anyway rather than assume."""
    return asyncio.get_running_loop().time() + (monotonic_deadline - time.monotonic())
