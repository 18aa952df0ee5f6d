"""Runs a graph: `workers` processes per component, restarted when they crash.

Each worker is a real OS process (`python -m runtime.worker ...`) in its own
session, so a terminal's Ctrl-C reaches only the supervisor, which then stops
the workers in order: SIGTERM to all (each deregisters and drains), SIGKILL to
any still alive after the drain timeout. The kernel kills the workers should
the supervisor itself die without that chance (see `dies_with_parent`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from runtime.config import ConfigError, ServiceSettings
from runtime.distributed import DistributedRuntime
from runtime.graph import Graph
from runtime.processes import dies_with_parent
from runtime.worker import DRAIN_TIMEOUT_S

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0
HEALTHY_AFTER_S = 30.0  # a worker that ran this long starts over at the first backoff


def say(message: str) -> None:
    """Supervisor messages go to stdout, one line each, so scripts can wait for them."""
    print(f"vidgraph: {message}", flush=True)


@dataclass(frozen=True)
class WorkerSpec:
    component: str
    index: int
    command: tuple[str, ...]
    device: int | None = None

    @property
    def label(self) -> str:
        return f"{self.component}[{self.index}]"


def worker_env(spec: WorkerSpec) -> dict[str, str]:
    """The supervisor's environment, narrowed to the worker's own GPU when it has one."""
    env = dict(os.environ)
    if spec.device is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(spec.device)
    return env


def interpreter(component: str, settings: ServiceSettings) -> str:
    """The Python that runs `component`'s workers; a missing one is a config error, now."""
    python = settings.interpreter()
    if python is None:
        return sys.executable
    if not os.access(python, os.X_OK):
        raise ConfigError(
            f"section {component!r}: its workers run with {python}, which does not exist or is "
            "not executable (engine: vllm needs `make install-vllm`; ServiceArgs.python picks "
            "another interpreter)"
        )
    return python


class Supervisor:
    """Starts, restarts and stops the worker processes of one graph."""

    def __init__(
        self,
        graph_module: str,
        graph: Graph,
        settings: Mapping[str, ServiceSettings],
        worker_args: Sequence[str],
        etcd_address: str,
        namespace: str,
    ) -> None:
        self._graph = graph
        self._settings = settings
        self._etcd_address = etcd_address
        self._namespace = namespace
        options = ["--etcd", etcd_address, "--namespace", namespace, *worker_args]
        self._specs = [
            WorkerSpec(
                name,
                index,
                (interpreter(name, settings[name]), "-m", "runtime.worker", graph_module, name)
                + tuple(options),
                settings[name].device_of(index),
            )
            for name in graph.names()
            for index in range(settings[name].workers)
        ]
        self._processes: dict[WorkerSpec, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()

    async def run(self) -> int:
        """Serve until SIGINT/SIGTERM, then stop every worker; returns the exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._stopping.set)
        runtime = await DistributedRuntime.connect(self._etcd_address, self._namespace)
        slots = [asyncio.create_task(self._keep_running(spec)) for spec in self._specs]
        announcer = asyncio.create_task(self._announce_when_ready(runtime))
        await self._stopping.wait()
        say("stopping: draining in-flight requests")
        announcer.cancel()
        for process in self._processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        _, stuck = await asyncio.wait(slots, timeout=DRAIN_TIMEOUT_S + 5)
        for spec, process in self._processes.items():
            if process.returncode is None:
                say(f"{spec.label} did not stop in time; killing it")
                process.kill()
        await asyncio.gather(*stuck)
        await runtime.close()
        say("stopped")
        return 0

    async def _keep_running(self, spec: WorkerSpec) -> None:
        backoff = FIRST_BACKOFF_S
        while not self._stopping.is_set():
            started = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                *dies_with_parent(spec.command), start_new_session=True, env=worker_env(spec)
            )
            self._processes[spec] = process
            code = await process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > HEALTHY_AFTER_S:
                backoff = FIRST_BACKOFF_S
            say(f"{spec.label} (pid {process.pid}) exited with {code}; restarting in {backoff} s")
            try:
                await asyncio.wait_for(self._stopping.wait(), backoff)
            except TimeoutError:
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _announce_when_ready(self, runtime: DistributedRuntime) -> None:
        """Say once every worker has registered, and where the entry point listens."""
        for name in self._graph.names():
            workers = self._settings[name].workers
            await runtime.client(name).wait_for_instances(workers, timeout_s=float("inf"))
        root = self._graph.root.name
        config = self._settings[root].config
        say(f"all {len(self._specs)} workers up")
        if hasattr(config, "port"):
            host = getattr(config, "host", "127.0.0.1")
            say(f"{root} listening on http://{host}:{config.port}")
