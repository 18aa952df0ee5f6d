"""Which instance gets the next request; chosen per component by `router:` in YAML.

Routers see only live, reachable instances (the client filters them) and this
process's own count of requests in flight to each: cheap, local, and good
enough to keep a slow worker from piling up work.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

from runtime.discovery import Instance

RouterName = Literal["round-robin", "random", "least-loaded", "power-of-two"]
Load = Callable[[Instance], int]


class Router(Protocol):
    def choose(self, instances: Sequence[Instance], load: Load) -> Instance:
        """Pick one of `instances` (never empty)."""
        ...


class RoundRobin:
    """Each instance in turn: even spread for requests of similar cost."""

    def __init__(self) -> None:
        self._turn = itertools.count()

    def choose(self, instances: Sequence[Instance], load: Load) -> Instance:
        return instances[next(self._turn) % len(instances)]


class Random:
    """Uniformly at random: no shared state, fine with many independent callers."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, instances: Sequence[Instance], load: Load) -> Instance:
        return self._rng.choice(instances)


class LeastLoaded:
    """The instance with the fewest requests in flight; ties broken at random."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, instances: Sequence[Instance], load: Load) -> Instance:
        lowest = min(load(instance) for instance in instances)
        return self._rng.choice([i for i in instances if load(i) == lowest])


class PowerOfTwo:
    """The less loaded of two random instances: near least-loaded, without herding."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, instances: Sequence[Instance], load: Load) -> Instance:
        if len(instances) == 1:
            return instances[0]
        first, second = self._rng.sample(list(instances), 2)
        return second if load(second) < load(first) else first


ROUTERS: dict[RouterName, type[Router]] = {
    "round-robin": RoundRobin,
    "random": Random,
    "least-loaded": LeastLoaded,
    "power-of-two": PowerOfTwo,
}


def make_router(name: RouterName) -> Router:
    """A fresh router of the kind `name` names (one of ROUTERS)."""
    if name not in ROUTERS:
        raise ValueError(f"unknown router {name!r}; choose one of {sorted(ROUTERS)}")
    return ROUTERS[name]()
