"""`Connector`: the per-process entry point of the data plane.

A producer calls `create_readable` and sends the returned metadata over the
request plane; a consumer calls `read` or `read_into` with it. The connector
owns the live readables and one housekeeping task that, while any readable is
live, progresses the backend (NIXL needs the producer to poll), frees the ones
whose completion arrived and expires the ones nobody pulled. With nothing live
the task exits, so an idle process costs no CPU.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import ClassVar

import torch

from transport.descriptor import Descriptor
from transport.errors import TransferError, TransferTimeout
from transport.metadata import NixlEndpoint, RdmaMetadata, TcpEndpoint, dtype_from_name
from transport.nixl_backend import NixlBackend
from transport.polling import pause
from transport.readable import ReadableOperation, ReadableState
from transport.tcp import TcpPeers, TcpServer

log = logging.getLogger(__name__)

BACKENDS = ("auto", "nixl", "tcp")
_LEASE_CHECK_S = 0.05


class Connector:
    """Exposes local tensors to peers and reads peers' tensors. Use from one event-loop thread."""

    _instance: ClassVar[Connector | None] = None

    def __init__(self, backend: str = "auto", host: str = "127.0.0.1", port: int = 0) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"transport backend must be one of {BACKENDS}, not {backend!r}")
        self.requested_backend = backend
        self.host = host
        self.port = port
        self._nixl: NixlBackend | None = None
        self._resolved: str | None = None
        self._tcp = TcpServer(host, port, lookup=self._live_descriptors, on_complete=self._done)
        self._tcp_peers = TcpPeers()
        self._readables: dict[str, ReadableOperation] = {}
        self._counters: Counter[str] = Counter()
        self._housekeeper: asyncio.Task[None] | None = None
        self._last_activity = 0.0

    @classmethod
    def get(
        cls, backend: str | None = None, *, host: str | None = None, port: int | None = None
    ) -> Connector:
        """The process-wide connector; arguments given must match the one already created."""
        if cls._instance is None:
            cls._instance = cls(backend or "auto", host or "127.0.0.1", port or 0)
            return cls._instance
        current = cls._instance
        wanted = {"backend": backend, "host": host, "port": port}
        have = {"backend": current.requested_backend, "host": current.host, "port": current.port}
        clashes = [
            f"{k}={v!r} (have {have[k]!r})" for k, v in wanted.items() if v not in (None, have[k])
        ]
        if clashes:
            raise ValueError(
                f"the transport connector already exists with {', '.join(clashes)}; "
                "configure it once at process start"
            )
        return current

    @property
    def backend(self) -> str:
        """'nixl' or 'tcp': what this process serves with (chosen on first use)."""
        if self._resolved is None:
            self._resolved = self._resolve_backend()
        return self._resolved

    async def create_readable(
        self, descs: Sequence[Descriptor], lease_s: float = 30.0
    ) -> ReadableOperation:
        """Exposes `descs` to one consumer until it has read them or `lease_s` passes."""
        descs = list(descs)
        if not descs:
            raise ValueError("create_readable needs at least one Descriptor")
        key = uuid.uuid4().hex
        if self.backend == "nixl":
            assert self._nixl is not None
            endpoint: NixlEndpoint | TcpEndpoint = self._nixl.expose(descs)
        else:
            endpoint = await self._tcp.endpoint()
        metadata = RdmaMetadata(key=key, tensors=tuple(d.spec for d in descs), endpoint=endpoint)
        deadline = time.monotonic() + lease_s
        op = ReadableOperation(metadata, descs, deadline, release=self._release)
        self._readables[key] = op
        self._last_activity = time.monotonic()
        self._ensure_housekeeper()
        return op

    async def read(
        self, meta: RdmaMetadata, timeout: float = 30.0, device: str | torch.device = "cpu"
    ) -> list[torch.Tensor]:
        """Allocates tensors matching `meta` on `device`, fills them from the producer."""
        tensors = [
            torch.empty(spec.shape, dtype=dtype_from_name(spec.dtype), device=device)
            for spec in meta.tensors
        ]
        await self.read_into(meta, [Descriptor(t) for t in tensors], timeout)
        return tensors

    async def read_into(
        self, meta: RdmaMetadata, dst: Sequence[Descriptor], timeout: float = 30.0
    ) -> None:
        """Fills the caller's buffers from the producer, then lets the producer free its side."""
        dst = list(dst)
        _check_destinations(meta, dst)
        endpoint = meta.endpoint
        try:
            async with asyncio.timeout(timeout):
                if isinstance(endpoint, TcpEndpoint):
                    await self._tcp_peers.pull(endpoint, meta.key, dst)
                elif self.backend == "nixl":
                    assert self._nixl is not None
                    await self._nixl.pull(endpoint, meta.key, dst)
                else:
                    raise TransferError(
                        "the producer offers only NIXL but this process runs the tcp transport; "
                        "use the same `transport:` setting on every worker"
                    )
        except TimeoutError:
            self._counters["read_failures"] += 1
            raise TransferTimeout(
                f"reading {meta.nbytes} B ({meta.backend}) did not finish within {timeout}s; "
                "is the producer alive and its event loop responsive?"
            ) from None
        except TransferError:
            self._counters["read_failures"] += 1
            raise
        self._counters["transfers"] += 1
        self._counters["bytes_read"] += meta.nbytes

    def stats(self) -> dict[str, int | str]:
        """Counters for /metrics and leak checks."""
        return {
            "backend": self._resolved or self.requested_backend,
            "bytes_read": self._counters["bytes_read"],
            "bytes_served": self._counters["bytes_served"],
            "transfers": self._counters["transfers"],
            "read_failures": self._counters["read_failures"],
            "readables_completed": self._counters["completed"],
            "readables_expired": self._counters["expired"],
            "readables_released": self._counters["released"],
            "live_readables": len(self._readables),
            "live_registrations": self._nixl.live_registrations if self._nixl else 0,
            "nixl_agent_rebuilds": self._nixl.rebuilds if self._nixl else 0,
            "nixl_peer_loads": self._nixl.peer_loads if self._nixl else 0,
            "tcp_connects": self._tcp_peers.connects,
        }

    def close(self) -> None:
        """Releases every live readable and registration; the next `get()` starts afresh."""
        for key in list(self._readables):
            self._finish(key, ReadableState.RELEASED)
        if self._housekeeper is not None and not self._housekeeper.get_loop().is_closed():
            self._housekeeper.cancel()
        self._tcp.close()
        self._tcp_peers.close()
        if self._nixl is not None:
            self._nixl.close()
        if Connector._instance is self:
            Connector._instance = None

    def _resolve_backend(self) -> str:
        if self.requested_backend == "tcp":
            return "tcp"
        try:
            self._nixl = NixlBackend(self._done, serving=self._serving_agents, host=self.host)
        except Exception as exc:
            if self.requested_backend == "nixl":
                raise TransferError(
                    f"NIXL could not start ({exc!r}); set `transport: tcp` to run without it"
                ) from exc
            log.warning("NIXL could not start (%r); falling back to the tcp transport", exc)
            return "tcp"
        return "nixl"

    def _live_descriptors(self, key: str) -> list[Descriptor] | None:
        op = self._readables.get(key)
        return op.descriptors if op else None

    def _done(self, key: str) -> None:
        self._finish(key, ReadableState.COMPLETED)

    def _release(self, key: str) -> None:
        self._finish(key, ReadableState.RELEASED)

    def _finish(self, key: str, state: ReadableState) -> None:
        op = self._readables.pop(key, None)
        if op is None:
            return  # a late or duplicate notification for a readable already finished
        if state is ReadableState.COMPLETED:
            self._counters["bytes_served"] += op.metadata.nbytes
        elif state is ReadableState.EXPIRED:
            log.warning("readable %s expired unread; its buffers are freed", key)
        self._counters[state.value] += 1
        self._last_activity = time.monotonic()  # a consumer that just finished may read again
        op.finish(state)

    def _ensure_housekeeper(self) -> None:
        loop = asyncio.get_running_loop()
        task = self._housekeeper
        if task is None or task.done() or task.get_loop() is not loop:
            self._housekeeper = loop.create_task(self._housekeep())

    def _serving_agents(self) -> set[str]:
        """The NIXL agents that exposed the live readables (a replaced agent serves on)."""
        return {
            op.metadata.endpoint.agent_name
            for op in self._readables.values()
            if isinstance(op.metadata.endpoint, NixlEndpoint)
        }

    async def _housekeep(self) -> None:
        while self._readables:
            if self._nixl is not None:
                self._nixl.poll()
            now = time.monotonic()
            for op in [op for op in self._readables.values() if op.deadline <= now]:
                self._finish(op.key, ReadableState.EXPIRED)
            if self._nixl is not None:
                await pause(now - self._last_activity)
            else:  # the tcp server is driven by its sockets; only leases need watching
                await asyncio.sleep(_LEASE_CHECK_S)
        if self._nixl is not None:
            self._nixl.poll()


def _check_destinations(meta: RdmaMetadata, dst: list[Descriptor]) -> None:
    if len(dst) != len(meta.tensors):
        raise ValueError(f"metadata describes {len(meta.tensors)} tensors, got {len(dst)} buffers")
    for i, (spec, desc) in enumerate(zip(meta.tensors, dst, strict=True)):
        if desc.nbytes != spec.nbytes:
            raise ValueError(
                f"buffer {i} holds {desc.nbytes} B but the remote tensor has {spec.nbytes}"
            )
        if not desc.writable:
            raise ValueError(f"buffer {i} is read-only; read_into needs writable memory")
