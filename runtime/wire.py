"""The request plane's frames, socket settings and batching, shared by both ends.

A frame is a msgpack array whose first two items are the frame kind and the
caller's request number (unique per caller socket):

    caller -> worker   [REQUEST, rid, endpoint, timeout_s, request_id, body]
                       [CANCEL, rid]
    worker -> caller   [DATA, rid, body]          zero or more per request
                       [END, rid]                 the stream finished
                       [ERROR, rid, error_dict]   the stream failed (ServiceError.to_dict)

Exactly one END or ERROR closes every request, so a caller never has to
guess whether an empty stream was a success. Each ZeroMQ message (after the
ROUTER's routing frame) carries a msgpack array of frames: everything queued
for one peer during one event-loop turn travels together.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from enum import IntEnum
from typing import Any

import msgpack
import zmq
import zmq.asyncio

from protocol import codec

# Liveness is checked by libzmq's own I/O thread (ZMTP heartbeats), which keeps
# answering while Python is busy in a long forward pass; a peer that stops
# answering for HEARTBEAT_TIMEOUT_MS is disconnected and its requests fail.
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_MS = 3000
OUTBOX_HIGH_WATER = 1000  # frames queued before producers wait for the socket


class Unsendable(ValueError):
    """A frame msgpack cannot encode, e.g. an integer past 64 bits or a lone surrogate."""


_ARRAY_HEADER = msgpack.Packer()  # frames are encoded one by one, then sent as one array


class Kind(IntEnum):
    REQUEST = 1
    CANCEL = 2
    DATA = 3
    END = 4
    ERROR = 5


def configure(socket: zmq.Socket) -> None:
    """Settings both ends share: heartbeats, bounded reconnects, no lingering on close."""
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    socket.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)
    socket.setsockopt(zmq.RECONNECT_IVL, 100)
    socket.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)


async def receive(socket: zmq.asyncio.Socket) -> AsyncIterator[list[bytes]]:
    """Every message arriving on `socket` (as its list of parts), for as long as it is open.

    pyzmq's asyncio layer costs a future per call, which dominates a stream of
    small replies; so wait through it for the first message only, then take
    what else is queued through a synchronous shadow of the same socket. Safe
    because pyzmq's asyncio recv checks the socket's events before it waits.
    """
    shadow = zmq.Socket.shadow(socket.underlying)
    while True:
        yield await socket.recv_multipart()
        while True:
            try:
                message = shadow.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            yield message


class Outbox:
    """Frames waiting to be sent: one ZeroMQ message per peer per event-loop turn.

    `put` is synchronous, so a handler that yields several replies in one turn,
    or many requests finishing together, costs one send instead of one each:
    with pyzmq, the send (a wake-up of libzmq's I/O thread) is the dominant
    cost of a small reply. Producers call `room()` to wait while the socket
    falls behind.

    Each frame is encoded in `put`, so a frame that cannot be encoded (an
    integer past 64 bits, a lone surrogate) raises there, at the one request
    it belongs to, instead of killing the sender and every later request.
    """

    def __init__(
        self, socket: zmq.asyncio.Socket, on_unreachable: Callable[[bytes], None] | None = None
    ) -> None:
        self._socket = socket
        self._on_unreachable = on_unreachable
        self._queued: dict[bytes, list[bytes]] = {}
        self._backlog = 0
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._sender = asyncio.create_task(self._send_forever())

    def put(self, frame: list[Any], peer: bytes = b"") -> None:
        """Queue `frame` for `peer` (a ROUTER's routing id; empty on a DEALER).

        Raises `Unsendable` when the frame cannot be encoded.
        """
        try:
            encoded = codec.encode(frame)
        except (TypeError, ValueError, OverflowError) as error:
            raise Unsendable(f"a value in the message cannot be encoded ({error})") from None
        self._queued.setdefault(peer, []).append(encoded)
        self._backlog += 1
        self._ready.set()
        if self._backlog >= OUTBOX_HIGH_WATER:
            self._room.clear()

    async def room(self) -> None:
        """Return once the backlog is below the high-water mark."""
        await self._room.wait()

    async def _send_forever(self) -> None:
        while True:
            await self._ready.wait()
            await self._send_queued()

    async def _send_queued(self) -> None:
        queued, self._queued = self._queued, {}
        self._ready.clear()
        self._backlog = 0
        self._room.set()
        for peer, frames in queued.items():
            payload = _ARRAY_HEADER.pack_array_header(len(frames)) + b"".join(frames)
            try:
                await self._socket.send_multipart([peer, payload] if peer else [payload])
            except zmq.ZMQError:
                # A ROUTER with ROUTER_MANDATORY refuses peers that disconnected.
                if self._on_unreachable is None:
                    raise
                self._on_unreachable(peer)

    async def close(self) -> None:
        """Send what is still queued (for at most a second), then stop."""
        self._sender.cancel()
        try:
            await self._sender
        except asyncio.CancelledError:
            pass
        try:
            await asyncio.wait_for(self._send_queued(), 1.0)
        except (TimeoutError, zmq.ZMQError):
            pass
