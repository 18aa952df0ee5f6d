"""The other process in the transport tests: a producer or consumer driven over a socket.

Run as `python tests/transport/transport_peer.py --backend nixl`; it prints `PORT <n>`,
the port of its control socket, on stdout. Commands are length-prefixed
msgpack maps; see `COMMANDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import hashlib
import mmap
import struct
from typing import Any

import msgpack
import torch

from transport import Connector, Descriptor, RdmaMetadata, ReadableOperation, TransferError

FRAME = struct.Struct("!I")


def make_tensor(dtype: str, nbytes: int, seed: int) -> torch.Tensor:
    """Random bytes viewed as `dtype`, so every bit pattern (NaNs too) must survive.

    `nbytes` must be a multiple of 128 (16 rows of whole 64-bit words).
    """
    generator = torch.Generator().manual_seed(seed)
    words = torch.randint(
        -(2**63), 2**63 - 1, (nbytes // 8,), dtype=torch.int64, generator=generator
    )
    return words.view(getattr(torch, dtype)).view(16, -1)


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().view(-1).view(torch.uint8).numpy()).hexdigest()


def break_loopback_endpoint(agent: Any) -> None:
    """Makes UCX fail a NIXL agent's connection to itself, as a transport error would.

    A loopback READ from registered memory that has since been unmapped fails
    with EFAULT, and UCX then marks the endpoint failed. Afterwards NIXL refuses
    every new registration on that agent (NIXL_ERR_BACKEND): the production symptom.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t] + [ctypes.c_int] * 3 + [ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size, rw = mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_WRITE
    src, dst = (
        libc.mmap(None, size, rw, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0) for _ in range(2)
    )
    for addr in (src, dst):
        agent.register_memory([(addr, size, 0, "")], "DRAM")
    libc.munmap(src, size)
    local = agent.get_xfer_descs([(dst, size, 0)], "DRAM")
    remote = agent.get_xfer_descs([(src, size, 0)], "DRAM")
    handle = agent.initialize_xfer("READ", local, remote, agent.name, b"")
    with contextlib.suppress(Exception):  # failing is the point
        agent.transfer(handle)
    try:
        agent.register_memory([(dst, size, 0, "")], "DRAM")
    except Exception:
        return
    raise RuntimeError("the NIXL agent still registers memory; the loopback endpoint did not fail")


def connector_agent(connector: Connector) -> Any:
    """The NIXL agent a connector currently uses (test-only access to its internals)."""
    return connector._nixl._agent


async def send_frame(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    payload = msgpack.packb(message)
    writer.write(FRAME.pack(len(payload)) + payload)
    await writer.drain()


async def recv_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    (length,) = FRAME.unpack(await reader.readexactly(FRAME.size))
    return msgpack.unpackb(await reader.readexactly(length))


class Peer:
    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self.readables: dict[str, ReadableOperation] = {}
        self.cache: dict[tuple[str, int, int], torch.Tensor] = {}

    async def expose(
        self, dtype: str, nbytes: int, seeds: list[int], lease_s: float, cached: bool = False
    ) -> dict:
        """`cached` exposes one kept tensor per seed again and again, as an embedding cache does."""
        metas = []
        for seed in seeds:
            tensor = make_tensor(dtype, nbytes, seed)
            if cached:
                tensor = self.cache.setdefault((dtype, nbytes, seed), tensor)
            op = await self.connector.create_readable([Descriptor(tensor)], lease_s=lease_s)
            self.readables[op.key] = op
            metas.append(op.metadata.to_dict())
        return {"metas": metas}

    async def wait(self, key: str, timeout: float) -> dict:
        op = self.readables.pop(key)
        try:
            await op.wait_for_completion(timeout)
        except TransferError as exc:
            return {"state": op.state.value, "error": str(exc)}
        return {"state": op.state.value}

    async def read(self, metas: list[dict], timeout: float) -> dict:
        reads = [self.connector.read(RdmaMetadata.from_dict(m), timeout) for m in metas]
        try:
            results = await asyncio.gather(*reads)
        except TransferError as exc:
            return {"error": str(exc)}
        return {"digests": [[digest(t) for t in tensors] for tensors in results]}

    async def stats(self) -> dict:
        return self.connector.stats()

    async def uncache(self) -> dict:
        self.cache.clear()
        return {}

    async def break_agent(self) -> dict:
        break_loopback_endpoint(connector_agent(self.connector))
        return {}


COMMANDS = ("expose", "wait", "read", "stats", "uncache", "break_agent")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="auto")
    peer = Peer(Connector.get(parser.parse_args().backend))
    peer.connector.backend  # noqa: B018  (resolve now, so a fallback warning shows at start)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await recv_frame(reader)
        command = request.pop("cmd")
        assert command in COMMANDS, command
        await send_frame(writer, await getattr(peer, command)(**request))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
