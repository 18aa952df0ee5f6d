"""The per-process runtime: one etcd session, one ZMQ context, shared by everything in it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import zmq.asyncio

from runtime.client import Client
from runtime.connection import ConnectionPool
from runtime.discovery import LEASE_TTL_S, Discovery, Instance
from runtime.routers import RouterName, make_router
from runtime.secret import GraphSecret
from runtime.server import EndpointServer, Handler


class DistributedRuntime:
    """What one process needs to serve endpoints and to call other components.

    Workers get one from `runtime.worker`; tests, benchmarks and scripts make
    their own with `await DistributedRuntime.connect(...)` to call a running graph.
    """

    def __init__(self, discovery: Discovery, secret: GraphSecret | None = None) -> None:
        self.discovery = discovery
        self._secret = secret
        # One ZeroMQ context per process, never terminated: terminating a context
        # blocks until every socket in it is closed, and a runtime that was never
        # closed would otherwise hang its process when garbage collection ran it.
        self._zmq = zmq.asyncio.Context.instance()
        self._connections = ConnectionPool(self._zmq, secret)
        self._servers: list[EndpointServer] = []

    @classmethod
    async def connect(
        cls,
        etcd_address: str,
        namespace: str,
        lease_ttl_s: int = LEASE_TTL_S,
        secret: GraphSecret | None = None,
    ) -> DistributedRuntime:
        """Open the etcd session (and this process's lease) for `namespace`.

        `secret` (default: the one `VIDGRAPH_SECRET_FILE` names, if any) admits this
        process to a graph that has one: see `runtime.secret`.
        """
        secret = secret or GraphSecret.from_env()
        return cls(await Discovery.connect(etcd_address, namespace, lease_ttl_s, secret), secret)

    @property
    def namespace(self) -> str:
        return self.discovery.namespace

    @property
    def instance_id(self) -> str:
        """This process's id in etcd (its lease id in hex)."""
        return self.discovery.instance_id

    def client(self, component: str, router: RouterName = "round-robin") -> Client:
        """A client for the component named `component`, routing with `router`."""
        watcher = self.discovery.watch(component, on_vanish=self._forget)
        return Client(watcher, self._connections, make_router(router))

    def _forget(self, instance: Instance) -> None:
        reason = f"{instance.component} instance {instance.instance_id} left the graph"
        self._connections.retire(instance.address, reason)

    def serve(self, handlers: Mapping[str, Handler], host: str) -> EndpointServer:
        """Start answering `handlers` on a free port of `host` (not yet registered)."""
        server = EndpointServer(self._zmq, handlers, host, self._secret)
        self._servers.append(server)
        return server

    async def register(self, component: str, endpoints: Iterable[str], server: EndpointServer):
        """Make `server` findable as an instance of `component` serving `endpoints`."""
        await self.discovery.register(component, endpoints, server.host, server.port)

    async def close(self) -> None:
        """Deregister, close every socket, disconnect from etcd."""
        await self.discovery.close()
        for server in self._servers:
            await server.close()
        await self._connections.close()
