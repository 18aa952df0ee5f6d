"""Faults injected into the running graph while 32 requests flow.

For every fault: each accepted request ends with a whole answer or a clear
error (never a hang, never a stream cut off without an error event); the
supervisor replaces what died; traffic is answered again within 30 s; and the
NIXL buffers and KV cache of the requests that died are freed (counters at 0).
Each test prints one line for the reliability table (run with `-s`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from reliability_helpers import (
    MAX_INFLIGHT,
    REPLACED_S,
    REQUEST_TIMEOUT_S,
    WORKERS,
    RestartableEtcd,
    chat_body,
    frontend_in_flight,
    frontend_metrics,
    instances,
    pids,
    send_all,
    tally,
    wait_until,
    wait_whole,
    worker_stats,
)

from benchmarks.soak import Outcome, stream_with_fault
from graphs.serve import RunningGraph
from runtime.discovery import LEASE_TTL_S

REQUESTS = 32
RECOVERY_S = 30.0
ANSWER_TOKENS = 64  # the tiny model decodes fast: longer answers keep streams open at the fault
# The migrated answer: long enough that its decode worker is still on it when found and killed.
MIGRATED_TOKENS = 1500


def burst_with_fault(
    graph: RunningGraph,
    media_dir: Path,
    fault: Callable[[], None],
    ready: Callable[[], bool] | None = None,
) -> list[Outcome]:
    """32 requests at once; `fault` runs once `ready()` says they are where it should hit.

    By default that is when half of them are in flight at the frontend. The
    fault runs on the event loop's own thread, blocking it briefly: a process
    it starts (etcd) gets the parent-death signal when its parent *thread* exits.
    """
    ready = ready or (lambda: frontend_in_flight(frontend_metrics(graph.base_url)) >= REQUESTS // 2)

    async def run() -> list[Outcome]:
        bodies = [chat_body(media_dir, i, max_tokens=ANSWER_TOKENS) for i in range(REQUESTS)]
        sending = asyncio.create_task(send_all(graph.base_url, bodies))
        while not sending.done() and not await asyncio.to_thread(ready):
            await asyncio.sleep(0.01)
        fault()
        return await sending

    return asyncio.run(run())


def serving(graph: RunningGraph, component: str, pid: int) -> Callable[[], bool]:
    """True while the worker with `pid` is serving at least one request."""
    [instance] = [i for i in instances(graph.base_url)[component] if i["pid"] == pid]
    key = (component, instance["id"])
    return lambda: worker_stats(graph.base_url, "inflight").get(key, 0) >= 1


def answered_again(graph: RunningGraph, media_dir: Path) -> bool:
    """Traffic is back when a request of every kind (video, long text...) is answered."""
    bodies = [chat_body(media_dir, i) for i in range(4)]
    return all(o.kind == "answered" for o in asyncio.run(send_all(graph.base_url, bodies)))


def wait_recovered(graph: RunningGraph, media_dir: Path, since: float, what: str) -> float:
    wait_until(
        f"traffic answered after {what}", lambda: answered_again(graph, media_dir), RECOVERY_S
    )
    return time.monotonic() - since


def assert_nothing_lost(outcomes: list[Outcome]) -> dict[str, int]:
    counts = tally(outcomes)
    lost = [o.lost for o in outcomes if o.kind == "lost"]
    assert not lost, f"{len(lost)} requests lost: {lost[:3]}"
    for outcome in outcomes:
        if outcome.kind == "errored":
            # 200: the stream had started, and the error came as an SSE error event.
            assert outcome.status in (200, 503, 504), (outcome.status, outcome.error)
    return counts


def assert_no_leaks(graph: RunningGraph) -> None:
    """What dead requests held is given back: NIXL buffers, KV sequences, in-flight counts."""

    def held() -> dict[str, dict]:
        found = {
            stat: {k: v for k, v in worker_stats(graph.base_url, stat).items() if v > 0}
            for stat in ("transport_live_readables", "running_sequences", "inflight")
        }
        running = frontend_in_flight(frontend_metrics(graph.base_url))
        found["frontend in flight"] = {"": running} if running else {}
        return {stat: where for stat, where in found.items() if where}

    try:
        wait_until("every buffer and sequence freed", lambda: not held() or None, 20)
    except AssertionError as error:
        raise AssertionError(f"{error}; still held: {held()}") from None


def report(fault: str, counts: dict[str, int], recovery_s: float) -> None:
    print(
        f"\nFAULT {fault:30} sent {REQUESTS} answered {counts['answered']} errored "
        f"{counts['errored']} lost {counts['lost']} traffic back in {recovery_s:.1f} s"
    )


@pytest.mark.parametrize(
    "component", ["EncodeWorker", "PrefillWorker", "DecodeWorker", "Processor"]
)
def test_kill_9_while_requests_flow(component: str, graph: RunningGraph, media_dir: Path) -> None:
    wait_whole(graph, component)
    victim = min(pids(graph.base_url)[component])
    killed_at: list[float] = []

    def kill() -> None:
        os.kill(victim, signal.SIGKILL)
        killed_at.append(time.monotonic())

    busy = serving(graph, component, victim)
    counts = assert_nothing_lost(burst_with_fault(graph, media_dir, kill, ready=busy))
    recovery_s = wait_recovered(graph, media_dir, killed_at[0], f"kill -9 {component}")
    assert_no_leaks(graph)
    # The supervisor replaces it (checked here, not by a later test: test order is random).
    wait_until(
        f"the killed {component} replaced",
        lambda: (
            victim not in (now := pids(graph.base_url)[component])
            and len(now) == WORKERS[component]
        ),
        REPLACED_S,
    )
    report(f"kill -9 {component}", counts, recovery_s)


def test_worker_paused_past_its_lease_comes_back(graph: RunningGraph, media_dir: Path) -> None:
    """SIGSTOP an encode worker past its lease: callers route around it; woken, it re-registers."""
    wait_whole(graph, "EncodeWorker")
    victim = min(pids(graph.base_url)["EncodeWorker"])
    paused_at: list[float] = []

    def pause() -> None:
        os.kill(victim, signal.SIGSTOP)
        paused_at.append(time.monotonic())

    try:
        counts = assert_nothing_lost(burst_with_fault(graph, media_dir, pause))
        recovery_s = wait_recovered(graph, media_dir, paused_at[0], "SIGSTOP EncodeWorker")
        wait_until(
            "the paused worker's lease expires",
            lambda: victim not in pids(graph.base_url)["EncodeWorker"],
            LEASE_TTL_S + 10,
        )
    finally:
        os.kill(victim, signal.SIGCONT)
    wait_whole(graph, "EncodeWorker")
    assert_no_leaks(graph)
    report("SIGSTOP EncodeWorker past lease", counts, recovery_s)


def test_etcd_restart_while_requests_flow(
    graph: RunningGraph, etcd: RestartableEtcd, media_dir: Path
) -> None:
    """etcd crashes and comes back on its data: the workers stay, and nothing is lost."""
    for component in WORKERS:
        wait_whole(graph, component)
    before = pids(graph.base_url)
    restarted_at: list[float] = []

    def restart() -> None:
        etcd.kill_and_restart()
        restarted_at.append(time.monotonic())

    counts = assert_nothing_lost(burst_with_fault(graph, media_dir, restart))
    recovery_s = wait_recovered(graph, media_dir, restarted_at[0], "the etcd restart")
    time.sleep(LEASE_TTL_S / 2)  # time for a worker whose lease lapsed to notice
    assert pids(graph.base_url) == before, "an etcd restart restarted or dropped workers"
    assert_no_leaks(graph)
    report("etcd kill -9 + restart", counts, recovery_s)


def test_beyond_max_inflight_is_429_with_retry_after(graph: RunningGraph, media_dir: Path) -> None:
    """Admission without a queue (max-queued 0): a burst of twice the limit is answered or 429."""
    for component in WORKERS:
        wait_whole(graph, component)  # an earlier test's victim may still be being replaced
    bodies = [{**chat_body(media_dir, i), "stream": False} for i in range(2 * MAX_INFLIGHT)]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=graph.base_url, timeout=REQUEST_TIMEOUT_S) as client:
            return await asyncio.gather(
                *(client.post("/v1/chat/completions", json=body) for body in bodies)
            )

    responses = asyncio.run(burst())
    statuses = sorted({r.status_code for r in responses})
    assert statuses == [200, 429], statuses
    for refused in (r for r in responses if r.status_code == 429):
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "rate_limit_exceeded"
    assert_no_leaks(graph)


def test_a_decode_worker_killed_mid_stream_hands_the_stream_on(
    graph: RunningGraph, media_dir: Path
) -> None:
    """kill -9 of the decode worker of a greedy stream: it goes on on the other, token for token.

    The client sees one whole stream, no error, its tokens those of the same request
    on the undisturbed graph; the Processors count one migration.
    """
    for component in ("DecodeWorker", "Processor"):
        wait_whole(graph, component)
    body = {
        **chat_body(media_dir, 0, max_tokens=MIGRATED_TOKENS),
        "logprobs": True,
        "return_tokens_as_token_ids": True,
        "stream_options": {"include_usage": True},
    }
    undisturbed = stream_with_fault(graph.base_url, body, REQUEST_TIMEOUT_S)
    migrations = sum(worker_stats(graph.base_url, "migrations").values())
    killed: list[int] = []

    def kill_its_decode_worker() -> None:
        decoding = wait_until(
            "a decode worker serving the stream",
            lambda: [
                i["pid"]
                for i in instances(graph.base_url)["DecodeWorker"]
                if worker_stats(graph.base_url, "inflight").get(("DecodeWorker", i["id"]), 0)
            ],
            30,
        )
        os.kill(decoding[0], signal.SIGKILL)
        killed.append(decoding[0])

    migrated = stream_with_fault(
        graph.base_url,
        body,
        REQUEST_TIMEOUT_S,
        kill_its_decode_worker,
        when=lambda stream: len(stream.token_ids) >= 4,
    )

    assert migrated.kind == "answered", (migrated.error, migrated.lost)
    assert len(undisturbed.token_ids) == MIGRATED_TOKENS
    assert migrated.token_ids == undisturbed.token_ids
    # Usage counts the whole answer once, and the prompt once (not with the tokens re-sent).
    assert migrated.usage == undisturbed.usage
    assert undisturbed.usage is not None
    assert undisturbed.usage["completion_tokens"] == MIGRATED_TOKENS
    wait_until(
        "the migration counted",
        lambda: sum(worker_stats(graph.base_url, "migrations").values()) == migrations + 1,
        30,
    )
    wait_until(
        "the killed DecodeWorker replaced",
        lambda: (
            killed[0] not in (now := pids(graph.base_url)["DecodeWorker"])
            and len(now) == WORKERS["DecodeWorker"]
        ),
        REPLACED_S,
    )
    wait_whole(graph, "DecodeWorker")
    assert_no_leaks(graph)
