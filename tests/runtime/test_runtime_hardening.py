"""What no peer can do to a worker: wedge its receive loop, stall its other callers, or
leave it listed after it stopped answering; and what no etcd hiccup can do to a watcher.

Real worker processes and a real etcd; the hostile peers are raw sockets.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio
from echo_graph import Echo, EchoConfig, echo_stats
from echo_graph import graph as echo_graph

from runtime import Client, DistributedRuntime
from runtime.discovery import component_prefix
from runtime.etcd_server import EtcdServer
from runtime.wire import Kind
from runtime.worker import serve

pytestmark = pytest.mark.timeout(90)
ANSWER_WITHIN_S = 10.0  # generous: the bound is "answers", not "answers fast"


def request(rid: int, endpoint: str = "echo", timeout_s: Any = 10.0, body: Any = None) -> list:
    return [Kind.REQUEST, rid, endpoint, timeout_s, f"fuzz-{rid}", body or {"text": "x"}, {}]


def hostile_messages(rng: random.Random) -> list[list[bytes]]:
    """Random bytes, truncated msgpack, and well-formed msgpack of every wrong shape."""
    valid = msgpack.packb([request(1)])
    messages = [[rng.randbytes(rng.randint(0, 300))] for _ in range(100)]
    messages += [[valid[:cut]] for cut in range(len(valid))]
    wrong_shapes: list[Any] = [
        42,
        "frames",
        {"kind": 1},
        [42],
        [[]],
        [[Kind.REQUEST]],
        [[99, 1]],
        [[Kind.DATA, 1, "a reply sent to a worker"]],
        [[Kind.REQUEST, "one", "echo", 10.0, "r", {}, {}]],
        [[Kind.REQUEST, 2, 7, 10.0, "r", {}, {}]],
        [[Kind.REQUEST, 3, "echo", 10.0, "r", {}, "not a trace context"]],
        [request(3, timeout_s=float("nan"))],
        [request(4, timeout_s=-1)],
        [request(5, timeout_s="soon")],
        [request(6)[:-1]],
        [[Kind.CANCEL, 7, "extra"]],
        [[True, 8]],
    ]
    messages += [[msgpack.packb(shape)] for shape in wrong_shapes]
    messages.append([valid, valid])  # the wrong number of parts
    return messages


async def test_garbage_into_a_live_worker_is_dropped_and_counted_and_it_answers_after(
    echo: Client,
) -> None:
    (instance,) = echo.instances()
    rng = random.Random(23)
    # Bytes that are not ZeroMQ at all, straight into the TCP port.
    for size in (1, 10, 64, 4096):
        with socket.create_connection((instance.host, instance.port), timeout=5) as raw:
            raw.sendall(rng.randbytes(size))
    # ZeroMQ messages that are not our frames, from a peer that then stays connected.
    context = zmq.asyncio.Context.instance()
    hostile = context.socket(zmq.DEALER)
    hostile.setsockopt(zmq.LINGER, 0)
    hostile.connect(instance.address)
    messages = hostile_messages(rng)
    for message in messages:
        await hostile.send_multipart(message)
    # A request number reused while its first request is still in flight.
    slow = request(9, body={"count": 3, "delay_s": 0.2})
    await hostile.send(msgpack.packb([slow, slow]))

    began = time.monotonic()
    answer = await asyncio.wait_for(echo.call("echo", {"text": "still here"}), ANSWER_WITHIN_S)
    answered_after = time.monotonic() - began

    assert answer["text"] == "echo: still here"
    assert answer["pid"] == instance.pid
    stats = await echo_stats(echo)
    # At least one frame per hostile message (a random one may hold several).
    assert stats["malformed_frames"] >= len(messages) - 5
    hostile.close()
    print(f"\nanswered {answered_after:.3f} s after {len(messages)} hostile messages")


async def test_a_caller_that_never_reads_does_not_hold_up_the_others(echo: Client) -> None:
    (instance,) = echo.instances()
    stalled = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    stalled.setsockopt(zmq.LINGER, 0)
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.RCVBUF, 4096)
    stalled.connect(instance.address)
    # Far more replies than the worker's queues and the kernel's buffers hold; never read.
    body = {"count": 100_000, "text": "x" * 65536}
    await stalled.send(msgpack.packb([request(1, timeout_s=60.0, body=body)]))
    try:
        deadline = time.monotonic() + 30
        while (await echo_stats(echo))["inflight"] != 1:
            assert time.monotonic() < deadline, "the stalled caller's request never ran"
            await asyncio.sleep(0.05)
        # Others are answered meanwhile. (The stalled request itself ends once the worker's
        # heartbeats to its caller go unanswered behind the full pipe: 5 s on, on a slow host.)
        for _ in range(20):
            replies = await asyncio.wait_for(
                echo.call("echo", {"text": "me too"}, deadline_s=ANSWER_WITHIN_S),
                ANSWER_WITHIN_S,
            )
            assert replies["text"] == "echo: me too"
            await asyncio.sleep(0.05)
    finally:
        stalled.close()
    # Once the stalled caller is gone, its request is cancelled, not left running.
    for _ in range(200):
        stats = await echo_stats(echo)
        if stats["inflight"] == 0:
            break
        await asyncio.sleep(0.05)
    assert stats["inflight"] == 0


async def test_a_request_cancelled_in_its_own_message_is_not_left_in_flight(
    echo: Client,
) -> None:
    """A caller that gives up at once sends CANCEL right behind its REQUEST: the worker may
    read both before the request's task first runs, and must still forget it."""
    (instance,) = echo.instances()
    caller = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    caller.setsockopt(zmq.LINGER, 0)
    caller.connect(instance.address)
    slow = request(1, timeout_s=600.0, body={"count": 3, "delay_s": 5})
    try:
        # A quick request after them: its END says the worker has read all three.
        await caller.send(msgpack.packb([slow, [Kind.CANCEL, 1], request(2)]))
        ended: list[Any] = []
        while [Kind.END, 2] not in ended:
            ended += msgpack.unpackb(await asyncio.wait_for(caller.recv(), ANSWER_WITHIN_S))
        deadline = time.monotonic() + ANSWER_WITHIN_S
        while (await echo_stats(echo))["inflight"] != 0:
            assert time.monotonic() < deadline, "the cancelled request is still counted in flight"
            await asyncio.sleep(0.05)
    finally:
        caller.close()


async def test_a_worker_whose_receive_loop_dies_deregisters_at_once(
    etcd: EtcdServer, namespace: str, runtime: DistributedRuntime
) -> None:
    worker_runtime = await DistributedRuntime.connect(etcd.address, namespace)
    serving = asyncio.create_task(serve(Echo(EchoConfig(), worker_runtime, echo_graph)))
    client = runtime.client("Echo")
    await client.wait_for_instances(1, timeout_s=10)

    (server,) = worker_runtime._servers
    server._socket.close()  # the receive loop ends on its socket's error
    began = time.monotonic()
    while client.instances():
        assert time.monotonic() - began < 5, "still listed: the lease would have to expire"
        await asyncio.sleep(0.02)

    assert await asyncio.wait_for(serving, 30) == 1


class FlakyEtcd:
    """The watcher's etcd client, failing its first `failures` listings with odd errors."""

    def __init__(self, client: Any, failures: int) -> None:
        self._client = client
        self.failures = failures

    async def get_prefix(self, prefix: bytes) -> Any:
        if self.failures:
            self.failures -= 1
            raise [RuntimeError, KeyError, OSError][self.failures % 3]("injected")
        return await self._client.get_prefix(prefix)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


async def test_a_watcher_survives_any_error_and_ignores_malformed_registrations(
    etcd: EtcdServer, namespace: str, runtime: DistributedRuntime
) -> None:
    etcd_client = runtime.discovery._client
    prefix = component_prefix(namespace, "Echo")
    await etcd_client.put(f"{prefix}echo/garbage".encode(), b"\xc1 not msgpack")
    await etcd_client.put(f"{prefix}echo/partial".encode(), msgpack.packb({"host": "h"}))
    worker = await DistributedRuntime.connect(etcd.address, namespace)
    try:
        await worker.register("Echo", ["echo"], worker.serve({}, "127.0.0.1"))
        runtime.discovery._client = FlakyEtcd(etcd_client, failures=3)
        client = runtime.client("Echo")
        (listed,) = await client.wait_for_instances(1, timeout_s=20)

        assert listed.instance_id == worker.instance_id
        assert runtime.discovery.watch("Echo").failures == 3
    finally:
        runtime.discovery._client = etcd_client
        await worker.close()
