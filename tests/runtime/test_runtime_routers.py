"""Routers: the policies on their own, then spreading real requests over real workers."""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter

import pytest

from runtime import DistributedRuntime, Instance
from runtime.routers import LeastLoaded, PowerOfTwo, Random, RoundRobin, make_router

pytestmark = pytest.mark.timeout(60)


def instances(count: int) -> list[Instance]:
    return [
        Instance("Echo", f"id{i}", "127.0.0.1", 5000 + i, 100 + i, 0.0, frozenset({"echo"}))
        for i in range(count)
    ]


def test_round_robin_takes_turns() -> None:
    pool = instances(3)
    router = RoundRobin()
    picks = [router.choose(pool, lambda i: 0).instance_id for _ in range(7)]

    assert picks == ["id0", "id1", "id2", "id0", "id1", "id2", "id0"]


def test_random_spreads_roughly_evenly() -> None:
    pool = instances(4)
    router = Random(random.Random(7))
    counts = Counter(router.choose(pool, lambda i: 0).instance_id for _ in range(4000))

    assert set(counts) == {"id0", "id1", "id2", "id3"}
    assert all(800 < n < 1200 for n in counts.values())


def test_least_loaded_picks_the_idlest_and_breaks_ties_at_random() -> None:
    pool = instances(3)
    load = {"id0": 2, "id1": 0, "id2": 0}
    router = LeastLoaded(random.Random(1))
    picks = Counter(
        router.choose(pool, lambda i: load[i.instance_id]).instance_id for _ in range(200)
    )

    assert set(picks) == {"id1", "id2"}


def test_power_of_two_never_picks_the_busiest() -> None:
    pool = instances(4)
    load = {"id0": 9, "id1": 1, "id2": 2, "id3": 3}
    router = PowerOfTwo(random.Random(3))
    picks = Counter(
        router.choose(pool, lambda i: load[i.instance_id]).instance_id for _ in range(600)
    )

    assert "id0" not in picks
    assert picks["id1"] > picks["id2"] > picks["id3"] > 0


def test_unknown_router_names_the_choices() -> None:
    with pytest.raises(ValueError, match="least-loaded"):
        make_router("fastest")  # type: ignore[arg-type]


async def test_real_requests_follow_the_router(workers, runtime: DistributedRuntime) -> None:
    for _ in range(3):
        workers.start("Echo")
    await runtime.client("Echo").wait_for_instances(3)

    round_robin = runtime.client("Echo", "round-robin")
    served_by = Counter([(await round_robin.call("echo", {}))["instance_id"] for _ in range(30)])
    assert sorted(served_by.values()) == [10, 10, 10]

    # Three slow streams at once: least-loaded sees each in flight and spreads them.
    least_loaded = runtime.client("Echo", "least-loaded")
    streams = [least_loaded.stream("echo", {"count": 2, "delay_s": 0.3}) for _ in range(3)]
    firsts = await asyncio.gather(*(anext(stream) for stream in streams))
    for stream in streams:
        await stream.aclose()
    assert len({reply["instance_id"] for reply in firsts}) == 3

    # A killed worker stays registered until its lease expires; requests go elsewhere.
    killed = workers.processes[2]
    killed.kill()
    served_by = Counter([(await round_robin.call("echo", {}))["pid"] for _ in range(10)])
    assert killed.pid not in served_by

    # A worker that stops is skipped as soon as its registration is gone.
    leaving = workers.processes[0]
    leaving.send_signal(signal.SIGTERM)
    while leaving.pid in {i.pid for i in round_robin.instances()}:
        await asyncio.sleep(0.005)
    served_by = Counter([(await round_robin.call("echo", {}))["pid"] for _ in range(10)])
    assert set(served_by) == {workers.processes[1].pid}
