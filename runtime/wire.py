"""The request plane's frames, socket settings and batching, shared by both ends.

A frame is a msgpack array whose first two items are the frame kind and the
caller's request number (unique per caller socket):

    caller -> worker   [REQUEST, rid, endpoint, timeout_s, request_id, body, trace]
                       [CANCEL, rid]
    worker -> caller   [DATA, rid, body]          zero or more per request
                       [END, rid]                 the stream finished
                       [ERROR, rid, error_dict]   the stream failed (ServiceError.to_dict)

`trace` is the caller's trace context (`runtime.tracing.carrier()`, maybe empty).
Exactly one END or ERROR closes every request, so a caller never has to
guess whether an empty stream was a success. Each ZeroMQ message (after the
ROUTER's routing frame) carries a msgpack array of frames: everything queued
for one peer during one event-loop turn travels together, followed by one
[LOAD, n] frame from a worker saying how many requests it is serving (every
caller's, not just this one's), which routers use as the instance's load.
A worker also sends [LOAD, n] alone, about once a second, to each caller with
requests in flight: the send fails if that caller is gone (see runtime.server).

Anything else that arrives (bytes that are not msgpack, a truncated array, a
frame of the wrong shape, a second request under a number still in flight) is
*malformed*: `parse` drops it and the receiving end counts it and logs it with
its peer, so no input can end a receive loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
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
OUTBOX_HIGH_WATER = 1000  # frames queued for one peer before its producers wait
_RETRY_FULL_PEER_S = 0.005  # how soon to try again a peer whose pipe was full

log = logging.getLogger(__name__)


class Unsendable(ValueError):
    """A frame msgpack cannot encode, e.g. an integer past 64 bits or a lone surrogate."""


_ARRAY_HEADER = msgpack.Packer()  # frames are encoded one by one, then sent as one array


class Kind(IntEnum):
    REQUEST = 1
    CANCEL = 2
    DATA = 3
    END = 4
    ERROR = 5
    LOAD = 6


# Each kind's frame length, and the types of its items after [kind, rid].
_SHAPES: dict[int, tuple[type | tuple[type, ...], ...]] = {
    Kind.REQUEST: (str, (int, float), str, object, dict),
    Kind.CANCEL: (),
    Kind.DATA: (object,),
    Kind.END: (),
    Kind.ERROR: (dict,),
    Kind.LOAD: (),
}


class Malformed(ValueError):
    """Input that is not a well-formed batch of frames; dropped by the receiver."""


def parse(payload: bytes, accept: frozenset[Kind]) -> tuple[list[list[Any]], int]:
    """The well-formed frames of kinds `accept` in one message, and how many were dropped.

    Raises `Malformed` when the message as a whole is unreadable (not msgpack,
    truncated, not an array): the whole message counts as one dropped frame.
    """
    try:
        batch = codec.decode(payload)
    except Exception as error:  # msgpack raises a zoo of types for hostile input
        raise Malformed(f"undecodable message ({type(error).__name__}: {error})") from None
    if not isinstance(batch, list):
        raise Malformed(f"a message must be an array of frames, not {type(batch).__name__}")
    frames = [frame for frame in batch if _well_formed(frame, accept)]
    return frames, len(batch) - len(frames)


def _well_formed(frame: Any, accept: frozenset[Kind]) -> bool:
    if not isinstance(frame, list) or len(frame) < 2:
        return False
    kind, rid = frame[0], frame[1]
    if type(kind) is not int or kind not in accept or type(rid) is not int:
        return False
    shape = _SHAPES[kind]
    return len(frame) == 2 + len(shape) and all(
        isinstance(item, expected) for item, expected in zip(frame[2:], shape, strict=True)
    )


class Rejects:
    """Counts malformed input and logs it with the peer that sent it (rate-limited per peer)."""

    LOG_EVERY = 100  # after the first from a peer, one line per this many

    def __init__(self, where: str) -> None:
        self.where = where
        self.count = 0
        self._by_peer: Counter[str] = Counter()

    def drop(self, peer: str, dropped: int, why: str) -> None:
        if dropped <= 0:
            return
        peer = peer if len(peer) <= 40 else f"{peer[:40]}..."  # a hostile routing id can be long
        self.count += dropped
        seen = self._by_peer[peer]
        self._by_peer[peer] += dropped
        if seen == 0 or seen // self.LOG_EVERY != (seen + dropped) // self.LOG_EVERY:
            log.warning(
                "%s dropped %d malformed frame(s) from %s (%d from it so far): %s",
                self.where,
                dropped,
                peer,
                seen + dropped,
                why,
            )


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
    cost of a small reply.

    Each peer has its own queue. A peer that does not read (its ZeroMQ pipe is
    full) keeps its frames queued and only its own producers wait in
    `room(peer)`; every other peer's frames go out as usual.

    Each frame is encoded in `put`, so a frame that cannot be encoded (an
    integer past 64 bits, a lone surrogate) raises there, at the one request
    it belongs to, instead of killing the sender and every later request.
    `trailer()`, if given, is appended to every message (a worker's load).
    """

    def __init__(
        self,
        socket: zmq.asyncio.Socket,
        on_unreachable: Callable[[bytes], None] | None = None,
        trailer: Callable[[], list[Any]] | None = None,
    ) -> None:
        self._socket = socket
        self._on_unreachable = on_unreachable
        self._trailer = trailer
        self._queued: dict[bytes, list[bytes]] = {}
        self._room: dict[bytes, asyncio.Event] = {}
        self._ready = asyncio.Event()
        self._sender = asyncio.create_task(self._send_forever())

    def put(self, frame: list[Any], peer: bytes = b"") -> None:
        """Queue `frame` for `peer` (a ROUTER's routing id; empty on a DEALER).

        Raises `Unsendable` when the frame cannot be encoded.
        """
        try:
            encoded = codec.encode(frame)
        except (TypeError, ValueError, OverflowError) as error:
            raise Unsendable(f"a value in the message cannot be encoded ({error})") from None
        queue = self._queued.setdefault(peer, [])
        queue.append(encoded)
        self._ready.set()
        if len(queue) >= OUTBOX_HIGH_WATER:
            self._room.setdefault(peer, asyncio.Event()).clear()

    async def room(self, peer: bytes = b"") -> None:
        """Return once `peer`'s backlog is below the high-water mark."""
        room = self._room.get(peer)
        if room is not None:
            await room.wait()

    def probe(self, peer: bytes) -> None:
        """Send `peer` at least the trailer this turn, to learn whether it is still there.

        A ROUTER with ROUTER_MANDATORY refuses to send to a peer that
        disconnected, and `on_unreachable` says so; only an outbox with a
        trailer (a worker's, with its load) has something to send.
        """
        assert self._trailer is not None, "a probe is the trailer alone"
        if peer not in self._queued:
            self._queued[peer] = []
            self._ready.set()

    def forget(self, peer: bytes) -> None:
        """Drop what is queued for a peer that went away, and release its producers."""
        self._queued.pop(peer, None)
        if (room := self._room.pop(peer, None)) is not None:
            room.set()

    async def _send_forever(self) -> None:
        while True:
            await self._ready.wait()
            if not await self._send_queued():
                await asyncio.sleep(_RETRY_FULL_PEER_S)

    async def _send_queued(self) -> bool:
        """Send each peer's queue as one message; False if some peer could not take its own."""
        queued, self._queued = self._queued, {}
        self._ready.clear()
        all_sent = True
        for peer, frames in queued.items():
            if self._trailer is not None:
                frames = [*frames, codec.encode(self._trailer())]
            payload = _ARRAY_HEADER.pack_array_header(len(frames)) + b"".join(frames)
            try:
                await self._socket.send_multipart(
                    [peer, payload] if peer else [payload], flags=zmq.NOBLOCK
                )
            except zmq.Again:
                # This peer's pipe is full: keep its frames (in order) for the next try.
                if self._trailer is not None:
                    frames = frames[:-1]
                if frames:  # (a probe's trailer alone is not worth keeping: the peer is there)
                    self._queued[peer] = frames + self._queued.get(peer, [])
                    self._ready.set()
                    all_sent = False
                continue
            except zmq.ZMQError:
                # A ROUTER with ROUTER_MANDATORY refuses peers that disconnected.
                if self._on_unreachable is None:
                    raise
                self.forget(peer)
                self._on_unreachable(peer)
                continue
            if (room := self._room.pop(peer, None)) is not None:
                room.set()
        return all_sent

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
