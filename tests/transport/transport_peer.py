"""The other process in the transport tests: a producer or consumer driven over a socket.

Run as `python tests/transport/transport_peer.py --backend nixl`; it prints `PORT <n>`,
the port of its control socket, on stdout. Commands are length-prefixed
msgpack maps; see `COMMANDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
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

    async def expose(self, dtype: str, nbytes: int, seeds: list[int], lease_s: float) -> dict:
        metas = []
        for seed in seeds:
            op = await self.connector.create_readable(
                [Descriptor(make_tensor(dtype, nbytes, seed))], lease_s=lease_s
            )
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


COMMANDS = ("expose", "wait", "read", "stats")


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
