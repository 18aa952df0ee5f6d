"""Which instance gets the next request; chosen per component by `router:` in YAML.

Routers see only live, reachable instances (the client filters them) and each
one's load: the requests it reported in flight from every caller on its last
message to this process, corrected by what this process sent since (see
`Connection.load`); cheap, needs no extra traffic, and sees other callers' work.

A caller may give a request a routing key (the encode workers' media key).
`cache-aware` sends each key to the same instance, so that instance's cache
holds it, unless that instance is over its fair share of the load; keyless
requests go to the least loaded.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import random
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

from runtime.discovery import Instance

RouterName = Literal["round-robin", "random", "least-loaded", "power-of-two", "cache-aware"]
Load = Callable[[Instance], int]


class Router(Protocol):
    def choose(self, instances: Sequence[Instance], load: Load, key: str | None = None) -> Instance:
        """Pick one of `instances` (never empty); `key`, if given, names what the request needs."""
        ...


class RoundRobin:
    """Each instance in turn: even spread for requests of similar cost."""

    def __init__(self) -> None:
        self._turn = itertools.count()

    def choose(self, instances: Sequence[Instance], load: Load, key: str | None = None) -> Instance:
        return instances[next(self._turn) % len(instances)]


class Random:
    """Uniformly at random: no shared state, fine with many independent callers."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, instances: Sequence[Instance], load: Load, key: str | None = None) -> Instance:
        return self._rng.choice(instances)


class LeastLoaded:
    """The instance with the fewest requests in flight; ties broken at random."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, instances: Sequence[Instance], load: Load, key: str | None = None) -> Instance:
        lowest = min(load(instance) for instance in instances)
        return self._rng.choice([i for i in instances if load(i) == lowest])


class PowerOfTwo:
    """The less loaded of two random instances: near least-loaded, without herding."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, instances: Sequence[Instance], load: Load, key: str | None = None) -> Instance:
        if len(instances) == 1:
            return instances[0]
        first, second = self._rng.sample(list(instances), 2)
        return second if load(second) < load(first) else first


class CacheAware:
    """Consistent hashing of the key with bounded load; keyless requests to the least loaded.

    Each instance owns many points on a hash ring; a key goes to the owner of
    the first point after the key's hash, so the same media lands on the same
    encode worker (its cache is hot) and adding or losing a worker moves only
    the keys of its own arcs. Bounded load (Mirrokni et al.): an instance
    already holding more than `balance` times its share of the requests in
    flight is passed over for the next one on the ring, so a hot video spills
    to a second worker instead of queueing behind itself.
    """

    POINTS_PER_INSTANCE = 64

    def __init__(self, balance: float = 1.25, rng: random.Random | None = None) -> None:
        self.balance = balance
        self._least_loaded = LeastLoaded(rng)
        self._ring_of: tuple[str, ...] = ()
        self._ring: list[tuple[int, str]] = []

    def choose(self, instances: Sequence[Instance], load: Load, key: str | None = None) -> Instance:
        if key is None or len(instances) == 1:
            return self._least_loaded.choose(instances, load)
        by_id = {instance.instance_id: instance for instance in instances}
        ring = self._ring_for(tuple(sorted(by_id)))
        loads = {instance_id: load(instance) for instance_id, instance in by_id.items()}
        capacity = math.ceil(self.balance * (sum(loads.values()) + 1) / len(by_id))
        start = bisect.bisect(ring, (_hash(key), ""))
        for offset in range(len(ring)):
            instance_id = ring[(start + offset) % len(ring)][1]
            if loads[instance_id] < capacity:
                return by_id[instance_id]
        return self._least_loaded.choose(instances, load)  # unreachable: capacity > average

    def _ring_for(self, instance_ids: tuple[str, ...]) -> list[tuple[int, str]]:
        if instance_ids != self._ring_of:
            self._ring_of = instance_ids
            self._ring = sorted(
                (_hash(f"{instance_id}#{point}"), instance_id)
                for instance_id in instance_ids
                for point in range(self.POINTS_PER_INSTANCE)
            )
        return self._ring


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


ROUTERS: dict[RouterName, type[Router]] = {
    "round-robin": RoundRobin,
    "random": Random,
    "least-loaded": LeastLoaded,
    "power-of-two": PowerOfTwo,
    "cache-aware": CacheAware,
}


def make_router(name: RouterName) -> Router:
    """A fresh router of the kind `name` names (one of ROUTERS)."""
    if name not in ROUTERS:
        raise ValueError(f"unknown router {name!r}; choose one of {sorted(ROUTERS)}")
    return ROUTERS[name]()
