"""The graph's secret: its holders are served; a process without it (or with another)
can neither register, nor list instances, nor get a request to a worker.

A real etcd with auth on, a real worker process holding the secret, raw callers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import zmq.asyncio
from echo_graph import echo_stats

from protocol.errors import ServiceError
from runtime import DistributedRuntime
from runtime.connection import Connection
from runtime.etcd_server import EtcdServer
from runtime.processes import dies_with_parent, stop_process
from runtime.secret import SECRET_FILE_ENV, GraphSecret
from runtime.wire import Kind

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secret") / "graph-secret"
    path.write_bytes(b"k" * 8 + b"this graph's own secret\n")
    return path


@pytest.fixture(scope="module")
def secured_etcd(secret_file: Path) -> Iterator[EtcdServer]:
    with EtcdServer(secret=GraphSecret.from_file(secret_file)) as server:
        yield server


def test_a_short_secret_is_refused_with_what_to_do() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        GraphSecret.from_bytes(b"password\n")


async def test_only_holders_of_the_secret_get_in(
    secured_etcd: EtcdServer, secret_file: Path, namespace: str
) -> None:
    secret = GraphSecret.from_file(secret_file)
    command = [sys.executable, "-m", "runtime.worker", "echo_graph", "Echo"]
    command += ["--etcd", secured_etcd.address, "--namespace", namespace]
    worker = subprocess.Popen(
        dies_with_parent(command),
        cwd=Path(__file__).parent,
        env={**os.environ, SECRET_FILE_ENV: str(secret_file)},  # as `vidgraph serve` passes it
    )
    holder = await DistributedRuntime.connect(secured_etcd.address, namespace, secret=secret)
    try:
        echo = holder.client("Echo")
        (instance,) = await echo.wait_for_instances(1)
        answer = await echo.call("echo", {"text": "in"})
        assert answer["text"] == "echo: in"

        other = GraphSecret.from_bytes(b"another graph's secret")
        for outsider in (None, other):
            # etcd: no registering, no listing.
            with pytest.raises(ConnectionError, match=SECRET_FILE_ENV):
                await DistributedRuntime.connect(secured_etcd.address, namespace, secret=outsider)
            # The worker's socket: no handshake, so no request reaches a handler.
            link = Connection(zmq.asyncio.Context.instance(), instance.address, outsider)
            try:
                with pytest.raises(ServiceError, match=SECRET_FILE_ENV):
                    async for _ in link.stream("echo", {}, timeout_s=30, request_id="outsider"):
                        pass
            finally:
                await link.close("test over")

        # A caller that learned the workers' public key (it is no secret) but not the secret.
        public_only = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        public_only.linger = 0
        public_only.curve_serverkey = secret.curve_public_key
        public_only.curve_publickey, public_only.curve_secretkey = zmq.curve_keypair()
        public_only.connect(instance.address)
        try:
            await public_only.send(msgpack.packb([[Kind.REQUEST, 1, "echo", 30.0, "x", {}, {}]]))
            assert not await public_only.poll(2000), "a worker answered a caller without the secret"
        finally:
            public_only.close()

        stats = await echo_stats(echo)
        assert stats["served"] == 1, stats  # the holder's request, and nothing else
    finally:
        await holder.close()
        stop_process(worker, grace_s=10)
