"""Routers: the policies on their own, then spreading real requests over real workers."""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter

import pytest

from runtime import DistributedRuntime, Instance
from runtime.routers import CacheAware, LeastLoaded, PowerOfTwo, Random, RoundRobin, make_router

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


def test_cache_aware_sends_each_key_to_one_instance_and_spreads_the_keys() -> None:
    pool = instances(4)
    router = CacheAware()
    owners = {f"video-{k}": router.choose(pool, lambda i: 0, f"video-{k}") for k in range(64)}

    again = {key: router.choose(list(reversed(pool)), lambda i: 0, key) for key in owners}
    assert again == owners  # the same owner whatever the order of the listing
    assert set(owners.values()) == set(pool)
    assert max(Counter(owners.values()).values()) <= 32


def test_cache_aware_moves_only_the_keys_of_a_lost_instance() -> None:
    pool = instances(4)
    router = CacheAware()
    keys = [f"video-{k}" for k in range(64)]
    before = {key: router.choose(pool, lambda i: 0, key) for key in keys}

    after = {key: router.choose(pool[1:], lambda i: 0, key) for key in keys}

    moved = {key for key in keys if after[key] != before[key]}
    assert moved == {key for key in keys if before[key] == pool[0]}


def test_cache_aware_spills_a_hot_key_when_its_owner_is_over_its_share() -> None:
    pool = instances(4)
    router = CacheAware(balance=1.25)
    owner = router.choose(pool, lambda i: 0, "hot")
    loads = {i.instance_id: 0 for i in pool}

    picks = []
    for _ in range(8):  # eight concurrent requests for one video
        chosen = router.choose(pool, lambda i: loads[i.instance_id], "hot")
        loads[chosen.instance_id] += 1
        picks.append(chosen)

    assert picks[0] == owner
    assert Counter(picks)[owner] < 8  # spilled, not queued behind itself
    assert max(loads.values()) <= 3  # ceil(1.25 * 8 / 4)
    assert router.choose(pool, lambda i: 5, None) in pool  # keyless: the least loaded


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


async def test_routers_see_the_load_other_callers_put_on_a_worker(
    workers, runtime: DistributedRuntime, etcd, namespace: str
) -> None:
    for _ in range(2):
        workers.start("Echo")
    busy, idle = await runtime.client("Echo").wait_for_instances(2)
    other = await DistributedRuntime.connect(etcd.address, namespace)
    try:
        # Another process keeps three slow streams open on `busy`.
        slow = {"count": 3, "delay_s": 1}
        streams = [
            other.client("Echo").stream("echo", slow, instance_id=busy.instance_id)
            for _ in range(3)
        ]
        await asyncio.gather(*(anext(stream) for stream in streams))
        router = runtime.client("Echo", "least-loaded")
        for instance in (busy, idle):  # any reply carries its worker's load
            await router.call("echo", {}, instance_id=instance.instance_id)

        served_by = Counter([(await router.call("echo", {}))["instance_id"] for _ in range(5)])

        assert served_by == {idle.instance_id: 5}
        for stream in streams:
            await stream.aclose()
    finally:
        await other.close()
