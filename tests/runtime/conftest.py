"""Fixtures for the runtime's tests: one real etcd per session, real worker processes."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from runtime import Client, DistributedRuntime
from runtime.etcd_server import EtcdServer
from runtime.processes import dies_with_parent, stop_process

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer() as server:
        yield server


@pytest.fixture
def namespace() -> str:
    """A namespace of its own per test, so no test sees another's instances."""
    return f"test-{uuid.uuid4().hex[:8]}"


class Workers:
    """Worker processes of `echo_graph`, each `python -m runtime.worker` as in production."""

    def __init__(self, etcd_address: str, namespace: str) -> None:
        self.etcd_address = etcd_address
        self.namespace = namespace
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, component: str = "Echo", *overrides: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "runtime.worker", "echo_graph", component]
        command += ["--etcd", self.etcd_address, "--namespace", self.namespace, *overrides]
        process = subprocess.Popen(dies_with_parent(command), cwd=HERE)
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            stop_process(process, grace_s=10)


@pytest.fixture
def workers(etcd: EtcdServer, namespace: str) -> Iterator[Workers]:
    started = Workers(etcd.address, namespace)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
async def runtime(etcd: EtcdServer, namespace: str) -> AsyncIterator[DistributedRuntime]:
    """The test process's own runtime, to call the workers."""
    connected = await DistributedRuntime.connect(etcd.address, namespace)
    try:
        yield connected
    finally:
        await connected.close()


@pytest.fixture
async def echo(workers: Workers, runtime: DistributedRuntime) -> Client:
    """A client of one started `Echo` worker, once its instance is discovered."""
    workers.start("Echo")
    client = runtime.client("Echo")
    await client.wait_for_instances(1)
    return client
