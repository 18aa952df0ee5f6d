"""The caller side of the request plane: one DEALER per worker, many requests on it.

A process keeps one `Connection` per worker address, shared by every request
it sends there; replies are sorted into per-request inboxes by request number.
A socket monitor watches the TCP link: the moment it drops (the worker died,
or stopped answering heartbeats) every request still waiting on it fails with
`WorkerLost`, so a dead worker is an error within seconds, never a hang.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from protocol.errors import DeadlineExceeded, ServiceError, WorkerLost
from runtime import tracing
from runtime.secret import SECRET_FILE_ENV, GraphSecret
from runtime.wire import Kind, Malformed, Outbox, Rejects, Unsendable, configure, parse, receive

_LINK_UP = zmq.EVENT_HANDSHAKE_SUCCEEDED
_LINK_DOWN = zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CLOSED
# A worker that speaks another security mechanism, or could not read our key (NO_DETAIL:
# also a link cut mid-handshake, hence a WorkerLost, retried on another instance).
_REFUSED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_EXPIRED: list[Any] = [Kind.ERROR]  # put in an inbox, by identity, when its deadline passes
_FROM_WORKERS = frozenset({Kind.DATA, Kind.END, Kind.ERROR, Kind.LOAD})
LOAD_REPORT_TTL_S = 2.0


class Connection:
    """One DEALER socket to one worker's ROUTER."""

    def __init__(
        self, context: zmq.asyncio.Context, address: str, secret: GraphSecret | None = None
    ) -> None:
        self.address = address
        self.reachable = True
        self._closed = False
        self._socket = context.socket(zmq.DEALER)
        configure(self._socket)
        if secret is not None:
            secret.call_on(self._socket)
        self._monitor = self._socket.get_monitor_socket(_LINK_UP | _LINK_DOWN | _REFUSED)
        self._socket.connect(address)
        self._outbox = Outbox(self._socket)
        self.rejects = Rejects(f"caller of {address}")
        # The worker's own count of requests in flight (from every caller), as of
        # its last message, and ours at that moment: see `load`.
        self._reported_load = 0
        self._inflight_at_report = 0
        self._reported_at = 0.0
        self._inboxes: dict[int, asyncio.Queue[list[Any]]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._request_numbers = itertools.count()
        self._tasks = [
            asyncio.create_task(self._receive_forever()),
            asyncio.create_task(self._watch_link()),
        ]

    @property
    def inflight(self) -> int:
        """Requests this process is waiting on from this worker."""
        return len(self._inboxes)

    @property
    def load(self) -> int:
        """The worker's requests in flight from every caller, as best known here.

        What it last reported, corrected by the requests this process sent or
        finished since; never less than this process's own count. A report
        older than LOAD_REPORT_TTL_S is ignored: without traffic to refresh it,
        a once-busy worker would otherwise look busy to this caller forever.
        """
        if time.monotonic() - self._reported_at > LOAD_REPORT_TTL_S:
            return self.inflight  # an old report says little about now
        estimate = self._reported_load + self.inflight - self._inflight_at_report
        return max(estimate, self.inflight)

    async def stream(
        self, endpoint: str, body: Any, *, timeout_s: float, request_id: str
    ) -> AsyncIterator[Any]:
        """Send one request and yield its replies; leaving early cancels it remotely."""
        rid = next(self._request_numbers)
        inbox: asyncio.Queue[list[Any]] = asyncio.Queue()
        self._inboxes[rid] = inbox
        self._idle.clear()
        expiry = asyncio.get_running_loop().call_later(timeout_s, inbox.put_nowait, _EXPIRED)
        closed = False
        try:
            try:
                request = [Kind.REQUEST, rid, endpoint, timeout_s, request_id, body]
                self._outbox.put([*request, tracing.carrier()])
            except Unsendable as error:
                closed = True  # never sent: nothing to cancel remotely
                raise ServiceError(
                    f"{error}; send integers within 64 bits and text that is valid Unicode",
                    status=400,
                    type="invalid_request_error",
                ) from None
            while True:
                frame = await inbox.get()
                if frame is _EXPIRED:
                    raise DeadlineExceeded(
                        f"{endpoint!r} on {self.address} did not finish within {timeout_s:.3g} s"
                    )
                if frame[0] == Kind.DATA:
                    yield frame[2]
                    continue
                closed = True
                if frame[0] == Kind.END:
                    return
                raise ServiceError.from_dict(frame[2])
        finally:
            expiry.cancel()
            del self._inboxes[rid]
            if not self._inboxes:
                self._idle.set()
            if not closed:
                self._outbox.put([Kind.CANCEL, rid])

    async def _receive_forever(self) -> None:
        async for message in receive(self._socket):
            try:
                if len(message) != 1:
                    raise Malformed(f"{len(message)} parts where one was expected")
                frames, dropped = parse(message[0], _FROM_WORKERS)
            except Malformed as error:
                self.rejects.drop(self.address, 1, str(error))
                continue
            for frame in frames:
                if frame[0] == Kind.LOAD:
                    self._reported_load, self._inflight_at_report = frame[1], self.inflight
                    self._reported_at = time.monotonic()
                elif (inbox := self._inboxes.get(frame[1])) is not None:
                    inbox.put_nowait(frame)
                # else: a reply to a request we already gave up on
            self.rejects.drop(self.address, dropped, "frames of the wrong kind or shape")

    async def _watch_link(self) -> None:
        while True:
            event = parse_monitor_message(await self._monitor.recv_multipart())["event"]
            if event == _LINK_UP:
                self.reachable = True
            elif event & _REFUSED:
                self.reachable = False
                self._fail_all(
                    WorkerLost(
                        f"the handshake with the worker at {self.address} failed: every "
                        f"process of a graph needs the same secret ({SECRET_FILE_ENV})"
                    )
                )
            else:
                self.reachable = False
                self._fail_all(WorkerLost(f"lost the connection to the worker at {self.address}"))

    def _fail_all(self, error: ServiceError) -> None:
        for rid, inbox in self._inboxes.items():
            inbox.put_nowait([Kind.ERROR, rid, error.to_dict()])

    async def close_when_idle(self, reason: str) -> None:
        """Close once the requests already sent have finished (a draining worker finishes them)."""
        await self._idle.wait()
        await self.close(reason)

    async def close(self, reason: str) -> None:
        """Fail whatever still waits on this worker with `reason`, then close the socket."""
        if self._closed:
            return
        self._closed = True
        self._fail_all(WorkerLost(reason))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._outbox.close()
        self._socket.disable_monitor()
        self._monitor.close()
        self._socket.close()


class ConnectionPool:
    """This process's connections, one per worker address, opened on first use."""

    def __init__(self, context: zmq.asyncio.Context, secret: GraphSecret | None = None) -> None:
        self._context = context
        self._secret = secret
        self._connections: dict[str, Connection] = {}
        self._retiring: dict[Connection, asyncio.Task[None]] = {}

    def get(self, address: str) -> Connection:
        if address not in self._connections:
            self._connections[address] = Connection(self._context, address, self._secret)
        return self._connections[address]

    def reachable(self, address: str) -> bool:
        """False once the link to `address` dropped and has not come back."""
        connection = self._connections.get(address)
        return connection is None or connection.reachable

    def inflight(self, address: str) -> int:
        connection = self._connections.get(address)
        return connection.inflight if connection else 0

    def load(self, address: str) -> int:
        """The worker's own in-flight count as last reported (see `Connection.load`)."""
        connection = self._connections.get(address)
        return connection.load if connection else 0

    def retire(self, address: str, reason: str) -> None:
        """Stop using the connection to a worker that left; close it once its requests finish."""
        connection = self._connections.pop(address, None)
        if connection is not None:
            task = asyncio.create_task(connection.close_when_idle(reason))
            self._retiring[connection] = task
            task.add_done_callback(lambda _: self._retiring.pop(connection, None))

    async def close(self) -> None:
        """Close every connection, failing whatever still waits on one."""
        for task in list(self._retiring.values()):
            task.cancel()
        reason = "the calling process is shutting down"
        for connection in [*self._connections.values(), *self._retiring]:
            await connection.close(reason)
        self._connections.clear()
