"""One worker process: `python -m runtime.worker GRAPH COMPONENT --etcd HOST:PORT ...`.

The supervisor starts one of these per `ServiceArgs.workers`; it also runs on
its own (e.g. on another host, against a shared etcd). Its life:

1. load the config section and take an etcd lease,
2. bind the request plane on a free port and run the component's `start()`,
3. register the endpoints (only now can requests arrive) and run `run()`,
4. on SIGTERM/SIGINT: revoke the lease so callers stop choosing it, finish
   in-flight requests, `stop()`, exit 0. A crash of `run()` or of the request
   plane's receive loop revokes the lease at once (so no caller keeps choosing
   an instance that answers nothing) and exits 1; the supervisor restarts it.
   An etcd outage is not a reason to stop: the worker serves on, and the lease
   keeper re-registers it when etcd is back.

Where it listens is per host, not per graph, so it comes from the command line
or the environment (which the supervisor passes on to every worker): `--host`
(VIDGRAPH_HOST, default loopback) is the address the request plane binds, and
`--advertise-address` (VIDGRAPH_ADVERTISE_ADDRESS) the one registered in etcd
for other hosts to call, by default the bound one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime import tracing
from runtime.client import STATS_ENDPOINT
from runtime.component import Component
from runtime.config import ComponentConfig, ConfigError, load_config, parse_overrides
from runtime.discovery import LEASE_TTL_S
from runtime.distributed import DistributedRuntime
from runtime.graph import Graph, GraphError, load_graph
from runtime.server import Context

log = logging.getLogger("runtime.worker")

DRAIN_TIMEOUT_S = 30.0
HOST_ENV = "VIDGRAPH_HOST"
ADVERTISE_ENV = "VIDGRAPH_ADVERTISE_ADDRESS"
LEASE_TTL_ENV = "VIDGRAPH_LEASE_TTL_S"
LOOPBACK = "127.0.0.1"
WILDCARDS = ("0.0.0.0", "::", "*")


@dataclass(frozen=True)
class Address:
    """Where a worker listens (`bind`) and where other hosts reach it (`advertise`)."""

    bind: str = LOOPBACK
    advertise: str = LOOPBACK


def resolve_address(host: str, advertise: str | None) -> Address:
    """The advertised address defaults to the bound one, or for a wildcard to this host's name.

    A wildcard cannot be called, so it needs a real address to register: in a
    Kubernetes pod the host name resolves to the pod IP.
    """
    if advertise:
        return Address(host, advertise)
    if host not in WILDCARDS:
        return Address(host, host)
    name = socket.gethostname()
    try:
        resolved = socket.gethostbyname(name)
    except OSError as error:
        raise ConfigError(
            f"--host {host} listens everywhere but this host's name {name!r} does not resolve "
            f"({error}); set --advertise-address or {ADVERTISE_ENV} to the address others reach"
        ) from None
    if resolved.startswith("127."):
        raise ConfigError(
            f"--host {host} listens everywhere but this host's name {name!r} resolves to "
            f"loopback ({resolved}); set --advertise-address or {ADVERTISE_ENV} to the address "
            "other hosts reach this worker at"
        )
    return Address(host, resolved)


async def serve(
    component: Component, address: Address = Address(), *, drain_timeout_s: float = DRAIN_TIMEOUT_S
) -> int:
    """Serve `component` on `address` until told to stop; returns the process exit code."""
    runtime = component.runtime
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)

    async def stats(request: None, ctx: Context) -> AsyncIterator[dict[str, float]]:
        # `server` is bound below, before any request can arrive; -1: not counting this one.
        timings = {f"requests_{e}": n for e, n in server.requests.items()}
        timings |= {f"request_seconds_{e}": t for e, t in server.request_seconds.items()}
        health = {"inflight": server.inflight - 1, "malformed_frames": server.rejects.count}
        yield {**component.stats(), **timings, **health}

    try:
        handlers = component.handlers()
        server = runtime.serve({**handlers, STATS_ENDPOINT: stats}, address.bind)
        await component.start()
        await runtime.discovery.register(
            component.name,
            [*handlers, STATS_ENDPOINT],
            address.advertise,
            server.port,
            component.model_card(),
            component.capacity(),
        )
        log.info(
            "%s serving %s on %s:%d (registered as %s)",
            component.name,
            list(handlers),
            address.bind,
            server.port,
            address.advertise,
        )
        running = asyncio.create_task(component.run())
        reason = await _first_reason_to_stop(running, stop, server.receiving)
        log.info("%s stopping: %s", component.name, reason)
        await runtime.discovery.revoke()
        await server.drain(drain_timeout_s)
        await component.stop()
        await _finish(running, grace_s=5.0)
        return 0 if reason == "signal" else 1
    finally:
        await runtime.close()


async def _first_reason_to_stop(
    running: asyncio.Task[None], stop: asyncio.Event, receiving: asyncio.Task[None]
) -> str:
    """Wait for a signal, the request plane's receive loop ending, or `run()` raising; say which."""
    signalled = asyncio.create_task(stop.wait())
    pending: set[asyncio.Task[Any]] = {signalled, running, receiving}
    try:
        while True:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if signalled in done:
                return "signal"
            if receiving in done:
                error = None if receiving.cancelled() else receiving.exception()
                log.error("the request plane stopped receiving", exc_info=error)
                return "request plane failed"
            if running.exception() is not None:
                log.error("run() failed", exc_info=running.exception())
                return "run() failed"
            # run() returned normally: the endpoints keep serving.
    finally:
        signalled.cancel()


async def _finish(running: asyncio.Task[None], grace_s: float) -> None:
    """Give `run()` time to return after `stop()`, then cancel it."""
    await asyncio.wait([running], timeout=grace_s)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await running


def build(
    graph: Graph, component_name: str, config_path: Path | None, overrides: list[str]
) -> tuple[type[Component], ComponentConfig]:
    """The component class and its validated config (errors say file, section, key)."""
    settings = load_config(
        config_path, {c.name: c.Config for c in graph.components}, parse_overrides(overrides)
    )
    return graph[component_name], settings[component_name].config


async def _main(args: argparse.Namespace, overrides: list[str]) -> int:
    address = resolve_address(args.host, args.advertise_address)
    # The component's own listeners (the transport's tcp fallback) advertise the same address.
    os.environ[ADVERTISE_ENV] = address.advertise
    graph = load_graph(args.graph)
    component_class, config = build(graph, args.component, args.config, overrides)
    runtime = await DistributedRuntime.connect(args.etcd, args.namespace, args.lease_ttl)
    return await serve(component_class(config, runtime, graph), address)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m runtime.worker", description=__doc__)
    parser.add_argument("graph", help="graph module, e.g. graphs.agg")
    parser.add_argument("component", help="component name, e.g. EncodeWorker")
    parser.add_argument("-f", "--config", type=Path, help="YAML config file")
    parser.add_argument("--etcd", required=True, help="etcd HOST:PORT")
    parser.add_argument("--namespace", default="default")
    parser.add_argument(
        "--host",
        default=os.environ.get(HOST_ENV, LOOPBACK),
        help=f"address the request plane binds (env {HOST_ENV}; 0.0.0.0 for every interface)",
    )
    parser.add_argument(
        "--advertise-address",
        default=os.environ.get(ADVERTISE_ENV),
        help=f"address other hosts reach this worker at, registered in etcd (env {ADVERTISE_ENV}; "
        "default: --host, or this host name's address when --host is a wildcard)",
    )
    parser.add_argument(
        "--lease-ttl",
        type=int,
        default=int(os.environ.get(LEASE_TTL_ENV, LEASE_TTL_S)),
        help=f"seconds a dead worker stays listed in etcd (env {LEASE_TTL_ENV}; "
        f"default {LEASE_TTL_S})",
    )
    args, overrides = parser.parse_known_args()
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {args.component}[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    flush_spans = tracing.configure(args.component)
    try:
        code = asyncio.run(_main(args, overrides))
    except (ConfigError, GraphError, ConnectionError) as error:
        sys.exit(f"vidgraph worker: {error}")
    finally:
        flush_spans()
    # Deregistered, drained and closed: what is left is the interpreter tearing down
    # torch's and transformers' modules, 1.8 s of every stop and restart for nothing.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
