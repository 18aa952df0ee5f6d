"""The request plane between real processes: streaming, errors, cancellation, deadlines, death."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest
import zmq.asyncio
from echo_graph import echo_stats

from runtime import (
    Client,
    DeadlineExceeded,
    NoInstances,
    ServiceError,
    WorkerLost,
)
from runtime.connection import Connection
from runtime.processes import dies_with_parent, stop_process

pytestmark = pytest.mark.timeout(60)


async def wait_for_stat(client: Client, name: str, value: float) -> dict[str, float]:
    """Poll the only instance's stats until `name` reaches `value` (or fail after 60 s)."""
    deadline = time.monotonic() + 60
    while (stats := await echo_stats(client))[name] != value:
        assert time.monotonic() < deadline, f"{name} stayed at {stats[name]}, expected {value}"
        await asyncio.sleep(0.05)
    return stats


async def test_one_request_streams_a_thousand_replies_in_order(echo: Client) -> None:
    replies = [r async for r in echo.stream("echo", {"text": "hi", "count": 1000})]

    assert [r["index"] for r in replies] == list(range(1000))
    assert replies[0]["text"] == "echo: hi"
    assert await echo.call("echo", {"text": "once"}) == {**replies[0], "text": "echo: once"} | {
        "time_left": pytest.approx(replies[0]["time_left"], abs=600)
    }


async def test_typed_error_reaches_the_caller_with_its_fields(echo: Client) -> None:
    replies = []
    with pytest.raises(ServiceError) as caught:
        async for reply in echo.stream("echo", {"count": 5, "fail_after": 2, "error": "typed"}):
            replies.append(reply)

    assert len(replies) == 2
    error = caught.value
    assert type(error) is ServiceError
    assert (error.message, error.status, error.param, error.code) == (
        "bad frame",
        422,
        "video",
        "bad",
    )


async def test_other_exceptions_become_500_with_their_message(echo: Client) -> None:
    with pytest.raises(ServiceError) as caught:
        await echo.call("echo", {"count": 1, "fail_after": 0})

    assert caught.value.status == 500
    assert "ValueError: echo was asked to fail" in caught.value.message


async def test_unknown_endpoint_is_refused_by_client_and_server(echo: Client) -> None:
    with pytest.raises(NoInstances):
        await echo.call("nope", {})

    # A caller with stale discovery data reaches the worker anyway: it answers 404.
    (instance,) = echo.instances()
    connection = Connection(zmq.asyncio.Context.instance(), instance.address)
    with pytest.raises(ServiceError) as caught:
        async for _ in connection.stream("nope", {}, timeout_s=5, request_id="stale"):
            pass
    await connection.close("test over")

    assert caught.value.status == 404
    assert "'echo'" in caught.value.message


async def test_closing_the_stream_cancels_the_remote_handler(echo: Client) -> None:
    stream = echo.stream("echo", {"count": 1000, "delay_s": 0.02})
    assert (await anext(stream))["index"] == 0
    await stream.aclose()

    stats = await wait_for_stat(echo, "cancelled", 1)
    assert stats["served"] == 0
    assert stats["inflight"] == 0


async def test_cancelling_the_calling_task_cancels_the_remote_handler(echo: Client) -> None:
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in echo.stream("echo", {"count": 1000, "delay_s": 0.02}):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    await wait_for_stat(echo, "cancelled", 1)


async def test_deadline_fails_the_call_and_stops_the_handler(echo: Client) -> None:
    began = time.monotonic()
    replies = []
    with pytest.raises(DeadlineExceeded) as caught:
        async for reply in echo.stream("echo", {"count": 100, "delay_s": 0.1}, deadline_s=0.5):
            replies.append(reply)

    assert time.monotonic() - began < 3
    assert caught.value.status == 504
    assert 0 < replies[0]["time_left"] <= 0.5
    await wait_for_stat(echo, "cancelled", 1)


async def test_a_worker_killed_mid_stream_is_an_error_not_a_hang(echo: Client, workers) -> None:
    (process,) = workers.processes
    replies = []
    with pytest.raises(WorkerLost):
        async for reply in echo.stream("echo", {"count": 1000, "delay_s": 0.05}):
            replies.append(reply)
            if len(replies) == 3:
                os.kill(process.pid, signal.SIGKILL)
                killed_at = time.monotonic()

    assert time.monotonic() - killed_at < 15
    assert len(replies) < 1000


async def test_a_request_whose_link_dropped_before_any_reply_is_sent_again(
    echo: Client, workers
) -> None:
    """Frozen past the heartbeat timeout, the only worker is given up; thawed, it serves."""
    (process,) = workers.processes
    (instance,) = echo.instances("echo")
    assert len(await _collect(echo.stream("echo", {}))) == 1  # the link is up (handshake done)
    call = asyncio.create_task(_collect(echo.stream("echo", {"count": 3, "delay_s": 1.0})))
    os.kill(process.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 30
        # The caller loses the worker: its link drops (heartbeats), or its lease lapses
        # first on a loaded host (etcd drops it; thawed, it registers again).
        while echo.reachable(instance) and instance in echo.instances("echo"):
            assert not call.done(), "a request to a frozen worker ended"
            assert time.monotonic() < deadline, "a frozen worker was never given up"
            await asyncio.sleep(0.05)
    finally:
        os.kill(process.pid, signal.SIGCONT)
    replies = await asyncio.wait_for(call, 30)
    assert [r["index"] for r in replies] == [0, 1, 2]


async def _collect(replies: AsyncIterator[dict]) -> list[dict]:
    return [reply async for reply in replies]


CALLER = """
import asyncio, json, sys
from runtime import DistributedRuntime

async def main():
    runtime = await DistributedRuntime.connect(sys.argv[1], sys.argv[2])
    client = runtime.client("Echo")
    await client.wait_for_instances(1)
    async for _ in client.stream("echo", json.loads(sys.argv[3])):
        pass

asyncio.run(main())
"""


async def kill_caller_mid_request(echo: Client, etcd, namespace: str, body: dict) -> None:
    """Another process sends `body` to the echo worker and is killed while it is served."""
    command = [sys.executable, "-c", CALLER, etcd.address, namespace, json.dumps(body)]
    caller = subprocess.Popen(dies_with_parent(command))
    try:
        await wait_for_stat(echo, "inflight", 1)
        os.kill(caller.pid, signal.SIGKILL)
        caller.wait()
    finally:
        stop_process(caller, grace_s=1)


async def test_a_caller_killed_mid_stream_stops_the_handler(echo: Client, etcd, namespace) -> None:
    await kill_caller_mid_request(echo, etcd, namespace, {"count": 100000, "delay_s": 0.05})
    stats = await wait_for_stat(echo, "cancelled", 1)

    assert stats["inflight"] == 0


@pytest.mark.timeout(120)  # wait_for_stat's own 60 s says what stayed, not the module's timeout
async def test_a_caller_killed_before_the_first_reply_stops_the_handler(
    echo: Client, etcd, namespace
) -> None:
    """A handler that has nothing to send yet (a prefill queued behind others) learns too.

    It used to learn that its caller died only from a reply that could not be
    sent, so a silent handler ran for no one until its deadline: the
    PrefillWorker's in-flight count stayed up after its DecodeWorker was killed.
    """
    silent = {"count": 1, "delay_s": 3600}
    await kill_caller_mid_request(echo, etcd, namespace, silent)
    stats = await wait_for_stat(echo, "cancelled", 1)

    assert stats["inflight"] == 0
    assert stats["served"] == 0
