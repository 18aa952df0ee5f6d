"""TCP fallback: the producer serves readable bytes by key from a tiny socket server.

Used where NIXL cannot load. The consumer connects to the host:port in the
metadata, sends the key, receives every tensor's bytes straight into its own
buffers, and acks; the ack is this backend's completion notification. The
connection then stays open for the next pull from the same producer: a
consumer keeps one connection per producer (more only while pulls overlap).

Wire format:  request  = u32 key length, key (utf-8)
              response = u8 status, u64 payload length, payload
              then, on success, the consumer sends one ack byte.
Status 0 carries the concatenated bytes; any other status carries an error text.
Requests follow each other on one connection until the consumer closes it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable

from transport.descriptor import Descriptor
from transport.errors import TransferError
from transport.metadata import TcpEndpoint

log = logging.getLogger(__name__)

_KEY_LENGTH = struct.Struct("!I")
_RESPONSE = struct.Struct("!BQ")
_OK, _UNKNOWN_KEY = 0, 1
_ACK = b"\x01"
_MAX_KEY_BYTES = 1024


class TcpServer:
    """Serves the live readables of this process; started lazily on the running loop."""

    def __init__(
        self,
        host: str,
        port: int,
        lookup: Callable[[str], list[Descriptor] | None],
        on_complete: Callable[[str], None],
    ) -> None:
        self._host = host
        self._port = port
        self._lookup = lookup
        self._on_complete = on_complete
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None

    async def endpoint(self) -> TcpEndpoint:
        """The address consumers should pull from, starting the server if needed."""
        loop = asyncio.get_running_loop()
        if self._accept_task is None or self._accept_task.get_loop() is not loop:
            self.close()
            self._listener = _listen(self._host, self._port)
            self._accept_task = loop.create_task(self._accept(self._listener))
        assert self._listener is not None
        return TcpEndpoint(host=self._host, port=self._listener.getsockname()[1])

    def close(self) -> None:
        if self._accept_task is not None and not self._accept_task.get_loop().is_closed():
            self._accept_task.cancel()
        if self._listener is not None:
            self._listener.close()
        self._listener = self._accept_task = None

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        connections: set[asyncio.Task[None]] = set()
        while True:
            conn, _ = await loop.sock_accept(listener)
            _no_delay(conn)
            task = loop.create_task(self._serve(conn))
            connections.add(task)
            task.add_done_callback(connections.discard)

    async def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                while await self._serve_one(conn):
                    pass
            except (OSError, TransferError) as exc:
                log.debug("tcp transport: a consumer went away mid-transfer: %r", exc)

    async def _serve_one(self, conn: socket.socket) -> bool:
        """Serve one key; False when the consumer closed the connection or it must end."""
        loop = asyncio.get_running_loop()
        header = await _recv_exactly(conn, _KEY_LENGTH.size, eof_ok=True)
        if header is None:
            return False
        (length,) = _KEY_LENGTH.unpack(header)
        if length > _MAX_KEY_BYTES:
            return False
        key = (await _recv_exactly(conn, length)).decode()
        descs = self._lookup(key)
        if descs is None:
            error = f"no live readable {key!r} here: it completed, expired or never existed"
            await loop.sock_sendall(conn, _RESPONSE.pack(_UNKNOWN_KEY, len(error)))
            await loop.sock_sendall(conn, error.encode())
            return True
        await loop.sock_sendall(conn, _RESPONSE.pack(_OK, sum(d.nbytes for d in descs)))
        for desc in descs:
            await loop.sock_sendall(conn, _host_view(desc))
        if await _recv_exactly(conn, 1) != _ACK:
            return False
        self._on_complete(key)
        return True


class TcpPeers:
    """The consumer side: idle connections kept per producer, reused by the next pull."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[socket.socket]] = {}
        self.connects = 0

    async def pull(self, endpoint: TcpEndpoint, key: str, dst: list[Descriptor]) -> None:
        """Pulls readable `key` from `endpoint` into `dst`, then acks so the producer frees it."""
        peer = (endpoint.host, endpoint.port)
        idle = self._idle.setdefault(peer, [])
        while idle:  # an idle connection the producer may have closed meanwhile
            conn = idle.pop()
            try:
                return await self._pull_on(conn, peer, key, dst)
            except _StaleConnection:
                conn.close()
        conn = await self._connect(peer)
        try:
            await self._pull_on(conn, peer, key, dst)
        except _StaleConnection as exc:
            conn.close()
            raise TransferError(
                f"tcp read from {endpoint.host}:{endpoint.port} failed: it closed the connection"
            ) from exc

    async def _pull_on(
        self, conn: socket.socket, peer: tuple[str, int], key: str, dst: list[Descriptor]
    ) -> None:
        """One pull on `conn`; `_StaleConnection` if it was closed before any answer came."""
        loop = asyncio.get_running_loop()
        address = f"{peer[0]}:{peer[1]}"
        encoded = key.encode()
        try:
            await loop.sock_sendall(conn, _KEY_LENGTH.pack(len(encoded)) + encoded)
            response = await _recv_exactly(conn, _RESPONSE.size, eof_ok=True)
        except OSError as exc:
            raise _StaleConnection from exc
        if response is None:
            raise _StaleConnection
        try:
            status, length = _RESPONSE.unpack(response)
            if status != _OK:
                error = (await _recv_exactly(conn, length)).decode(errors="replace")
                raise TransferError(f"tcp read from {address} refused: {error}")
            expected = sum(d.nbytes for d in dst)
            if length != expected:
                raise TransferError(f"{address} offers {length} B for {key}, expected {expected}")
            for desc in dst:
                await _recv_into(conn, desc)
            await loop.sock_sendall(conn, _ACK)
        except OSError as exc:
            conn.close()
            raise TransferError(f"tcp read from {address} failed: {exc!r}") from exc
        except BaseException:  # refused, mid-transfer failure, cancellation: start clean next time
            conn.close()
            raise
        self._idle[peer].append(conn)

    async def _connect(self, peer: tuple[str, int]) -> socket.socket:
        conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        conn.setblocking(False)
        _no_delay(conn)
        try:
            await asyncio.get_running_loop().sock_connect(conn, peer)
        except OSError as exc:
            conn.close()
            raise TransferError(f"tcp read from {peer[0]}:{peer[1]} failed: {exc!r}") from exc
        self.connects += 1
        return conn

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


class _StaleConnection(Exception):
    """A kept-open connection turned out closed before the producer answered: use a new one."""


def _no_delay(conn: socket.socket) -> None:
    """No Nagle: on a kept-open connection the ack and the next key are small writes that
    would otherwise wait for the peer's delayed ACK (tens of ms per pull)."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _listen(host: str, port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(128)
    listener.setblocking(False)
    return listener


def _host_view(desc: Descriptor) -> memoryview:
    """Host bytes of `desc`; GPU tensors are staged through host memory first."""
    if desc.tensor.is_cuda:
        return Descriptor(desc.tensor.cpu()).as_bytes_view()
    return desc.as_bytes_view()


async def _recv_into(conn: socket.socket, desc: Descriptor) -> None:
    if desc.tensor.is_cuda:
        staging = Descriptor(desc.tensor.new_empty(desc.tensor.shape, device="cpu"))
        await _recv_into(conn, staging)
        desc.tensor.copy_(staging.tensor)
        return
    await _fill(conn, desc.as_bytes_view())


async def _recv_exactly(conn: socket.socket, n: int, eof_ok: bool = False) -> bytes | None:
    """`n` bytes; with `eof_ok`, None if the peer closed before sending any of them."""
    buffer = bytearray(n)
    view = memoryview(buffer)
    if eof_ok:
        first = await asyncio.get_running_loop().sock_recv_into(conn, view)
        if first == 0:
            return None
        view = view[first:]
    await _fill(conn, view)
    return bytes(buffer)


async def _fill(conn: socket.socket, view: memoryview) -> None:
    loop = asyncio.get_running_loop()
    received = 0
    while received < len(view):
        n = await loop.sock_recv_into(conn, view[received:])
        if n == 0:
            raise TransferError("the peer closed the connection mid-transfer")
        received += n
