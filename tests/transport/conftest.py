"""Starts the second process of the transport tests and talks to it."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transport_peer import make_tensor, recv_frame, send_frame

from transport import Connector, Descriptor, RdmaMetadata

PEER_SCRIPT = Path(__file__).with_name("transport_peer.py")
STARTUP_TIMEOUT_S = 60.0


class PeerProcess:
    def __init__(self, backend: str, env: dict[str, str]) -> None:
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, str(PEER_SCRIPT), "--backend", backend],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            bufsize=0,  # unbuffered: select() must not miss lines already read ahead
            env={**os.environ, **env},
        )
        try:
            self.port = self._wait_for_port()
        except BaseException:
            self.stop()
            raise

    def _wait_for_port(self) -> int:
        # NIXL's Python logger writes to stdout too, so look for our line among others.
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], deadline - time.monotonic())
            line = self.proc.stdout.readline() if ready else b""
            if line.startswith(b"PORT "):
                return int(line.split()[1])
            if not line:
                break
        raise RuntimeError(f"transport peer did not start:\n{self.stderr_text()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            await send_frame(writer, {"cmd": cmd, **args})
            return await recv_frame(reader)
        finally:
            writer.close()

    def stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.stderr.close()


def start_peer(backend: str) -> PeerProcess:
    """A peer in `auto` mode; for 'tcp' NIXL is made unloadable, as on a host without it."""
    broken_nixl = {"NIXL_PLUGIN_DIR": "/nonexistent"} if backend == "tcp" else {}
    return PeerProcess("auto", broken_nixl)


@pytest.fixture(scope="module", params=["nixl", "tcp"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def peer(backend: str) -> Iterator[PeerProcess]:
    process = start_peer(backend)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def connector(backend: str) -> Iterator[Connector]:
    conn = Connector(backend)
    yield conn
    conn.close()


def is_exact(tensor: torch.Tensor, seed: int) -> bool:
    """Whether `tensor` holds the bytes of `make_tensor("uint8", ..., seed)`."""
    expected = make_tensor("uint8", tensor.numel(), seed)
    return torch.equal(tensor.view(-1), expected.view(-1))


async def round_trip(peer: PeerProcess, connector: Connector, seed: int) -> None:
    """A fresh 64 KiB transfer each way between this process and `peer`, checked byte for byte."""
    reply = await peer.call("expose", dtype="uint8", nbytes=64 << 10, seeds=[seed], lease_s=30)
    (pulled,) = await connector.read(RdmaMetadata.from_dict(reply["metas"][0]), timeout=10)
    assert is_exact(pulled, seed)
    mine = make_tensor("uint8", 64 << 10, seed + 1)
    op = await connector.create_readable([Descriptor(mine)], lease_s=30)
    reply = await peer.call("read", metas=[op.metadata.to_dict()], timeout=10)
    assert "error" not in reply, reply
    await op.wait_for_completion(timeout=10)
