"""NIXL backend: expose registered memory, READ a peer's memory, learn of completion.

One agent per process, UCX only, no progress thread (it spins a core even when
idle). Without it, nothing moves unless someone calls into the agent: a READ
completes only once the *producer* has progressed its worker too (the
consumer's flush waits for it), so the connector's housekeeping loop polls
through `poll()` while anything is exposed.

UCX runs its messages over TCP on whichever network interface looks fastest,
a short-lived one included (a virtual link some other program sets up). When
that link goes away, reads over it hang, and later every connection on it
fails. A process that advertises a loopback address only talks to this host,
so its UCX is kept on `lo` (unless UCX_NET_DEVICES says otherwise).

An agent can break for good. NIXL's UCX backend connects each agent to itself
when it starts, and every `register_memory` checks that loopback connection:
once a UCX error has failed it, every registration of new memory raises
NIXL_ERR_BACKEND, and NIXL offers no way to reconnect. A peer's entry can get
stuck the same way (when loading a peer's metadata fails, NIXL forgets the peer
but keeps its UCX connection, so every later load of that peer is refused). So
when a local step fails (registering, describing, loading a peer, preparing a
READ), the backend replaces its agent with a new one under a new name and tries
that step once more. The old agent is *retired*, not dropped: it keeps serving
the buffers it already exposed until they are read or expire. A failure of the
transfer itself is the peer's (it died, or the buffer is gone): the peer is
forgotten and the caller gets a `TransferError`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import uuid
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from transport.descriptor import Descriptor
from transport.errors import TransferError
from transport.metadata import NixlEndpoint
from transport.polling import pause
from transport.registry import Region, RegistrationCache

log = logging.getLogger(__name__)

T = TypeVar("T")
_MAX_BLOBS_PER_PEER = 256


def _import_nixl() -> Any:
    # NIXL logs at INFO to stdout unless told otherwise; this must precede the import.
    os.environ.setdefault("NIXL_LOG_LEVEL", "WARN")
    from nixl_cu13 import _api

    return _api


class NixlBackend:
    name = "nixl"

    def __init__(
        self,
        on_complete: Callable[[str], None],
        serving: Callable[[], Collection[str]],
        host: str,
    ) -> None:
        """`serving()` names the agents that exposed the readables still live; `host` is
        the address this process advertises to its peers."""
        if _is_loopback(host):
            os.environ.setdefault("UCX_NET_DEVICES", "lo")
        self._api = _import_nixl()
        # The bindings raise one class per NIXL status, with no common base.
        names = [n for n in dir(self._api.nixlBind) if n.startswith("nixl") and n.endswith("Error")]
        self._nixl_errors = tuple(getattr(self._api.nixlBind, n) for n in names)
        self._agent = self._new_agent()
        self._retired: dict[str, Any] = {}
        self._on_complete = on_complete
        self._serving = serving
        self._registry = RegistrationCache(self._register, self._deregister)
        # Producer: the partial metadata of each set of registered regions, per agent;
        # consumer: the metadata blobs each peer agent was already loaded with. The
        # same buffers exposed again (a cached embedding, a KV pool) describe the same
        # way, so the consumer loads a peer once, not once per read.
        self._described: dict[tuple[str, frozenset[Region]], bytes] = {}
        self._loaded: dict[str, set[bytes]] = {}
        self.rebuilds = 0
        self.peer_loads = 0

    @property
    def live_registrations(self) -> int:
        return len(self._registry)

    def expose(self, descs: list[Descriptor]) -> NixlEndpoint:
        """Registers `descs` (cached) and describes them for a remote READ."""
        mem_type = _single_mem_type(descs)
        return self._on_fresh_agent_if_failing(
            "exposing memory over NIXL", lambda: self._describe(descs, mem_type)
        )

    def poll(self) -> None:
        """Progresses the agents, reports finished readables, frees dead registrations."""
        for agent in [self._agent, *self._retired.values()]:
            try:
                notifications = agent.get_new_notifs()
            except self._nixl_errors as exc:
                log.warning("polling NIXL agent %s failed (retried next tick): %r", agent.name, exc)
                continue
            for messages in notifications.values():
                for message in messages:
                    self._on_complete(message.decode())
        self._drop_idle_retired()
        self._registry.collect()

    async def pull(self, endpoint: NixlEndpoint, key: str, dst: list[Descriptor]) -> None:
        """READs the remote regions into `dst`; NIXL then notifies the producer with `key`."""
        mem_type = _single_mem_type(dst)
        agent, handle = self._on_fresh_agent_if_failing(
            f"starting a NIXL read from {endpoint.agent_name}",
            lambda: self._start_read(endpoint, key, dst, mem_type),
        )
        try:
            await self._wait(agent, handle, endpoint.agent_name, sum(d.nbytes for d in dst))
        except TransferError:
            self._forget(agent, endpoint.agent_name)
            raise
        finally:
            self._release(handle)

    def close(self) -> None:
        self._registry.clear()
        self._retired.clear()

    def _describe(self, descs: list[Descriptor], mem_type: str) -> NixlEndpoint:
        regions = frozenset(self._registry.ensure(desc) for desc in descs)
        agent = self._agent
        agent_metadata = self._described.get((agent.name, regions))
        if agent_metadata is None:
            reg_descs = agent.get_reg_descs(
                [(addr, length, device, "") for _, device, addr, length in regions], mem_type
            )
            # Partial metadata names only these regions: the full agent metadata grows
            # with every live registration and would bloat each request-plane reply.
            agent_metadata = agent.get_partial_agent_metadata(reg_descs, True, ["UCX"])
            self._described[(agent.name, regions)] = agent_metadata
        return NixlEndpoint(
            agent_name=agent.name,
            agent_metadata=agent_metadata,
            mem_type=mem_type,
            regions=tuple((d.ptr, d.nbytes, d.device_id) for d in descs),
        )

    def _start_read(
        self, endpoint: NixlEndpoint, key: str, dst: list[Descriptor], mem_type: str
    ) -> tuple[Any, Any]:
        for desc in dst:
            self._registry.ensure(desc)
        agent = self._agent
        peer = endpoint.agent_name  # our own readable (the same name): NIXL reads it as loopback
        loaded = self._loaded.setdefault(peer, set())
        if peer != agent.name and endpoint.agent_metadata not in loaded:
            agent.add_remote_agent(endpoint.agent_metadata)
            self.peer_loads += 1
            if len(loaded) >= _MAX_BLOBS_PER_PEER:
                loaded.clear()  # forgetting only costs a reload
            loaded.add(endpoint.agent_metadata)
        local = agent.get_xfer_descs([(d.ptr, d.nbytes, d.device_id) for d in dst], mem_type)
        remote = agent.get_xfer_descs(list(endpoint.regions), endpoint.mem_type)
        return agent, agent.initialize_xfer("READ", local, remote, peer, key.encode())

    async def _wait(self, agent: Any, handle: Any, peer_name: str, nbytes: int) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            status = agent.transfer(handle)
            while status == "PROC":
                await pause(loop.time() - started, nbytes)
                status = agent.check_xfer_state(handle)
        except self._nixl_errors as exc:
            raise TransferError(
                f"NIXL read from {peer_name} failed: {exc!r}; the producer died or freed the "
                "buffer (lease expired?): ask it for the data again"
            ) from exc
        if status != "DONE":
            raise TransferError(
                f"NIXL read from {peer_name} ended in state {status}; ask the producer again"
            )

    def _on_fresh_agent_if_failing(self, what: str, step: Callable[[], T]) -> T:
        """Runs a local NIXL step; if NIXL fails it, runs it once more on a new agent."""
        try:
            return step()
        except self._nixl_errors as exc:
            self._rebuild(f"{what} failed: {exc!r}")
        try:
            return step()
        except self._nixl_errors as exc:
            raise TransferError(
                f"{what} failed, on a fresh NIXL agent too: {exc!r}; if this persists, "
                "set `transport: tcp` and report the NIXL error"
            ) from exc

    def _rebuild(self, reason: str) -> None:
        old = self._agent
        try:
            self._agent = self._new_agent()
        except Exception as exc:
            raise TransferError(
                f"NIXL agent {old.name} broke ({reason}) and no new agent could start ({exc!r}); "
                "set `transport: tcp`"
            ) from exc
        # The old agent owns its registrations and frees them when it is dropped;
        # the new one registers each buffer again on first use.
        self._registry.abandon()
        self._loaded.clear()  # the new agent knows no peer yet
        self._retired[old.name] = old
        self._drop_idle_retired()
        self.rebuilds += 1
        log.warning(
            "NIXL agent %s stopped working (%s); continuing on a new agent %s, the old one "
            "serves what it already exposed until read or expired",
            old.name,
            reason,
            self._agent.name,
        )

    def _drop_idle_retired(self) -> None:
        serving = self._serving()
        for name in [name for name in self._retired if name not in serving]:
            del self._retired[name]

    def _new_agent(self) -> Any:
        config = self._api.nixl_agent_config(enable_prog_thread=False, backends=["UCX"])
        name = f"vidgraph-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        agent = self._api.nixl_agent(name, config)
        if "UCX" not in agent.backends:
            raise RuntimeError("NIXL loaded but its UCX plugin did not start")
        return agent

    def _forget(self, agent: Any, peer: str) -> None:
        """Drops a failed peer's metadata so a restarted peer is not confused with it."""
        self._loaded.pop(peer, None)
        try:
            agent.remove_remote_agent(peer)
        except self._nixl_errors as exc:
            log.debug("removing NIXL peer %r failed: %r", peer, exc)

    def _register(self, region: Region) -> Any:
        mem_type, device, addr, length = region
        return self._agent.register_memory([(addr, length, device, "")], mem_type)

    def _deregister(self, handle: Any) -> None:
        self._described.clear()  # a freed region may come back at the same address
        try:
            self._agent.deregister_memory(handle)
        except self._nixl_errors as exc:
            log.warning("NIXL could not deregister a freed buffer: %r", exc)

    def _release(self, handle: Any) -> None:
        # Releasing an unfinished transfer asks NIXL to abort it; if it refuses, the
        # handle is kept in the agent's leak list and retried when the agent dies.
        try:
            handle.release()
        except self._nixl_errors as exc:
            log.warning("NIXL could not release a transfer handle: %r", exc)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return host == "localhost"


def _single_mem_type(descs: list[Descriptor]) -> str:
    mem_types = {desc.mem_type for desc in descs}
    if len(mem_types) != 1:
        raise ValueError(
            "all descriptors of one transfer must live on the same kind of memory; "
            f"got {sorted(mem_types)}: split them into separate transfers"
        )
    return mem_types.pop()
