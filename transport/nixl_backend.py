"""NIXL backend: expose registered memory, READ a peer's memory, learn of completion.

One agent per process, UCX only, no progress thread (it spins a core even when
idle). Without it, nothing moves unless someone calls into the agent, and on a
host without an RMA-capable transport (no IB, no xpmem: UCX then emulates READ
with active messages) the *producer* must keep calling in while a consumer
reads. The connector's housekeeping loop does that through `poll()`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

from transport.descriptor import Descriptor
from transport.errors import TransferError
from transport.metadata import NixlEndpoint
from transport.polling import pause
from transport.registry import Region, RegistrationCache

log = logging.getLogger(__name__)


def _import_nixl() -> Any:
    # NIXL logs at INFO to stdout unless told otherwise; this must precede the import.
    os.environ.setdefault("NIXL_LOG_LEVEL", "WARN")
    from nixl_cu13 import _api

    return _api


class NixlBackend:
    name = "nixl"

    def __init__(self, on_complete: Callable[[str], None]) -> None:
        api = _import_nixl()
        config = api.nixl_agent_config(enable_prog_thread=False, backends=["UCX"])
        name = f"vidgraph-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._agent = api.nixl_agent(name, config)
        if "UCX" not in self._agent.backends:
            raise RuntimeError("NIXL loaded but its UCX plugin did not start")
        self._on_complete = on_complete
        self._registry = RegistrationCache(self._register, self._agent.deregister_memory)

    @property
    def live_registrations(self) -> int:
        return len(self._registry)

    def expose(self, descs: list[Descriptor]) -> NixlEndpoint:
        """Registers `descs` (cached) and describes them for a remote READ."""
        mem_type = _single_mem_type(descs)
        regions = {self._registry.ensure(desc) for desc in descs}
        reg_descs = self._agent.get_reg_descs(
            [(addr, length, device, "") for _, device, addr, length in regions], mem_type
        )
        # Partial metadata names only these regions: the full agent metadata grows
        # with every live registration and would bloat each request-plane reply.
        agent_metadata = self._agent.get_partial_agent_metadata(reg_descs, True, ["UCX"])
        return NixlEndpoint(
            agent_name=self._agent.name,
            agent_metadata=agent_metadata,
            mem_type=mem_type,
            regions=tuple((d.ptr, d.nbytes, d.device_id) for d in descs),
        )

    def poll(self) -> None:
        """Progresses the agent, reports finished readables, frees dead registrations."""
        for messages in self._agent.get_new_notifs().values():
            for message in messages:
                self._on_complete(message.decode())
        self._registry.collect()

    async def pull(self, endpoint: NixlEndpoint, key: str, dst: list[Descriptor]) -> None:
        """READs the remote regions into `dst`; NIXL then notifies the producer with `key`."""
        mem_type = _single_mem_type(dst)
        for desc in dst:
            self._registry.ensure(desc)
        agent = self._agent
        try:
            peer = agent.add_remote_agent(endpoint.agent_metadata)
            local = agent.get_xfer_descs([(d.ptr, d.nbytes, d.device_id) for d in dst], mem_type)
            remote = agent.get_xfer_descs(list(endpoint.regions), endpoint.mem_type)
            handle = agent.initialize_xfer("READ", local, remote, peer, key.encode())
        except Exception as exc:
            raise TransferError(
                f"cannot start a NIXL read from {endpoint.agent_name}: {exc!r}"
            ) from exc
        try:
            await self._wait(handle, endpoint.agent_name, sum(d.nbytes for d in dst))
        except TransferError:
            self._forget(peer)
            raise
        finally:
            _release(handle)

    async def _wait(self, handle: Any, peer_name: str, nbytes: int) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            status = self._agent.transfer(handle)
            while status == "PROC":
                await pause(loop.time() - started, nbytes)
                status = self._agent.check_xfer_state(handle)
        except Exception as exc:
            raise TransferError(f"NIXL read from {peer_name} failed: {exc!r}") from exc
        if status != "DONE":
            raise TransferError(f"NIXL read from {peer_name} ended in state {status}")

    def _forget(self, peer: str | bytes) -> None:
        """Drops a failed peer's metadata so a restarted peer is not confused with it."""
        try:
            self._agent.remove_remote_agent(peer)
        except Exception as exc:
            log.debug("removing NIXL peer %r failed: %r", peer, exc)

    def _register(self, region: Region) -> Any:
        mem_type, device, addr, length = region
        return self._agent.register_memory([(addr, length, device, "")], mem_type)

    def close(self) -> None:
        self._registry.clear()


def _release(handle: Any) -> None:
    # Releasing an unfinished transfer asks NIXL to abort it; if it refuses, the
    # handle is kept in the agent's leak list and retried when the agent dies.
    try:
        handle.release()
    except Exception as exc:
        log.warning("NIXL could not release a transfer handle: %r", exc)


def _single_mem_type(descs: list[Descriptor]) -> str:
    mem_types = {desc.mem_type for desc in descs}
    if len(mem_types) != 1:
        raise ValueError(
            "all descriptors of one transfer must live on the same kind of memory; "
            f"got {sorted(mem_types)}: split them into separate transfers"
        )
    return mem_types.pop()
