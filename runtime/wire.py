"""The request plane's frames and socket settings, shared by both ends.

Each ZeroMQ message is one msgpack array whose first two items are the frame
kind and the caller's request number (unique per caller socket):

    caller -> worker   [REQUEST, rid, endpoint, timeout_s, request_id, body]
                       [CANCEL, rid]
    worker -> caller   [DATA, rid, body]          zero or more per request
                       [END, rid]                 the stream finished
                       [ERROR, rid, error_dict]   the stream failed (ServiceError.to_dict)

Exactly one END or ERROR closes every request, so a caller never has to
guess whether an empty stream was a success.
"""

from __future__ import annotations

from enum import IntEnum

import zmq

# Liveness is checked by libzmq's own I/O thread (ZMTP heartbeats), which keeps
# answering while Python is busy in a long forward pass; a peer that stops
# answering for HEARTBEAT_TIMEOUT_MS is disconnected and its requests fail.
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_MS = 3000


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
