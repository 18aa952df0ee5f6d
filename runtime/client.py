"""Calling a component: pick a live instance, stream the reply, clean up on the way out."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from protocol.errors import NoInstances, ServiceError, WorkerLost
from runtime.connection import ConnectionPool
from runtime.discovery import Instance, InstanceWatcher
from runtime.routers import Router

DEFAULT_DEADLINE_S = 600.0
MAX_ATTEMPTS = 3  # instances tried for one request, when they fail before replying
STATS_ENDPOINT = "__stats__"
NO_INSTANCE_GRACE_S = 3.0
LINK_BACK_GRACE_S = 20.0  # how long a request lost unanswered waits for an instance to retry on


class Client:
    """The instances of one component, as seen by one caller, with its routing policy."""

    def __init__(self, watcher: InstanceWatcher, connections: ConnectionPool, router: Router):
        self.component = watcher.component
        self._watcher = watcher
        self._connections = connections
        self._router = router

    def instances(self, endpoint: str | None = None) -> list[Instance]:
        """Live instances (serving `endpoint`, if given) as etcd reports them now."""
        return self._watcher.instances(endpoint)

    def reachable(self, instance: Instance) -> bool:
        """False once this caller's link to `instance` dropped (its lease may still be live)."""
        return self._connections.reachable(instance.address)

    def inflight(self, instance: Instance) -> int:
        """Requests this caller has in flight to `instance`: its queue, as far as we know."""
        return self._connections.inflight(instance.address)

    async def wait_for_instances(self, count: int = 1, timeout_s: float = 30.0) -> list[Instance]:
        """Wait until at least `count` instances are live, e.g. while the graph starts."""
        deadline = time.monotonic() + timeout_s
        while len(self.instances()) < count:
            if time.monotonic() > deadline:
                raise NoInstances(
                    f"{self.component}: {len(self.instances())} of {count} instances "
                    f"registered after {timeout_s:.3g} s"
                )
            await asyncio.sleep(0.05)
        return self.instances()

    async def stream(
        self,
        endpoint: str,
        request: Any,
        *,
        deadline_s: float | None = None,
        instance_id: str | None = None,
        request_id: str | None = None,
        route_key: str | None = None,
    ) -> AsyncIterator[Any]:
        """Send `request` to `endpoint` and yield the replies as they arrive.

        The router picks the instance unless `instance_id` names one; a
        `route_key` lets a cache-aware router send equal keys to one instance. Leaving
        the loop early (break, `aclose()`, cancellation) cancels the remote
        handler; `deadline_s` bounds the whole stream (DeadlineExceeded).
        Replies are plain msgpack values: dicts, not pydantic models.

        An instance lost before its first reply (killed, or refusing work
        while it drains) is retried on another one: nothing was observed yet,
        so the caller cannot tell; with no other instance it waits for one to
        register, or for a dropped link to come back (`_retry_target`). Once
        replies flow, `WorkerLost` is raised: only the caller knows what the
        replies so far mean (the Processor migrates a decode request with them).
        """
        timeout_s = DEFAULT_DEADLINE_S if deadline_s is None else deadline_s
        deadline = time.monotonic() + timeout_s
        request_id = request_id or uuid.uuid4().hex
        if not self._watcher.ready.is_set():
            await self._wait_listed(timeout_s)
        lost: set[str] = set()
        attempts = 0
        while True:
            if instance_id is None:
                await self._await_any(endpoint, lost, deadline)
            instance = self._pick(endpoint, instance_id, avoid=lost, key=route_key)
            replies = self._connections.get(instance.address).stream(
                endpoint, request, timeout_s=deadline - time.monotonic(), request_id=request_id
            )
            replied = False
            try:
                async with contextlib.aclosing(replies):
                    async for reply in replies:
                        replied = True
                        yield reply
                return
            except WorkerLost:
                attempts += 1
                if replied or instance_id is not None or attempts >= MAX_ATTEMPTS:
                    raise
                lost.add(instance.instance_id)
                link_dropped = not self.reachable(instance)
                if not await self._retry_target(endpoint, lost, instance, link_dropped, deadline):
                    raise

    async def _retry_target(
        self,
        endpoint: str,
        lost: set[str],
        instance: Instance,
        link_dropped: bool,
        deadline: float,
    ) -> bool:
        """Whether a request lost before its first reply has an instance to go to again.

        Another live instance, at once or once one registers: a worker whose
        lease lapsed comes back under a new id, a killed one is replaced. Or
        `instance` itself once its dropped link is back while etcd still lists
        it (it is then taken off `lost`): a link drops without its worker dying
        when a loaded host delays heartbeats past their timeout. An instance
        still listed and linked refused the request (it drains): that stands.
        After LINK_BACK_GRACE_S the loss stands too.
        """
        until = min(deadline, time.monotonic() + LINK_BACK_GRACE_S)
        while True:
            listed = self.instances(endpoint)
            if any(i.instance_id not in lost for i in listed):
                return True
            if any(i.instance_id == instance.instance_id for i in listed):
                if not link_dropped:
                    return False
                if self.reachable(instance):
                    lost.discard(instance.instance_id)
                    return True
            if time.monotonic() >= until:
                return False
            await asyncio.sleep(0.05)

    async def _await_any(self, endpoint: str, avoid: set[str], deadline: float) -> None:
        """Give a component with no live instance a moment to get one back.

        An instance re-registering after a lapsed lease, or restarted by the
        supervisor, leaves a gap of a second or two; requests arriving in it
        would otherwise all fail at once with 503. After the grace period (or
        the deadline), `_pick` raises `NoInstances` as before.
        """
        until = min(deadline, time.monotonic() + NO_INSTANCE_GRACE_S)
        while not [i for i in self.instances(endpoint) if i.instance_id not in avoid]:
            if time.monotonic() >= until:
                return
            await asyncio.sleep(0.05)

    async def call(self, endpoint: str, request: Any, **kwargs: Any) -> Any:
        """Send `request` to an endpoint that answers with exactly one reply, and return it."""
        replies = [reply async for reply in self.stream(endpoint, request, **kwargs)]
        if len(replies) != 1:
            raise ServiceError(
                f"{self.component}.{endpoint} sent {len(replies)} replies where one was expected"
            )
        return replies[0]

    async def collect_stats(self, timeout_s: float = 2.0) -> dict[str, dict[str, float]]:
        """Every live instance's `stats()` plus `inflight`, by instance id.

        Instances that fail to answer in time are left out: they are dying or
        stuck, and /health will show them missing soon enough.
        """
        instances = self.instances(STATS_ENDPOINT)
        answers = await asyncio.gather(
            *(
                self.call(STATS_ENDPOINT, None, deadline_s=timeout_s, instance_id=i.instance_id)
                for i in instances
            ),
            return_exceptions=True,
        )
        return {
            instance.instance_id: answer
            for instance, answer in zip(instances, answers, strict=True)
            if not isinstance(answer, BaseException)
        }

    async def _wait_listed(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self._watcher.ready.wait(), timeout_s)
        except TimeoutError:
            raise NoInstances(f"could not list {self.component} instances from etcd") from None

    def _pick(
        self, endpoint: str, instance_id: str | None, avoid: set[str], key: str | None = None
    ) -> Instance:
        candidates = [i for i in self.instances(endpoint) if i.instance_id not in avoid]
        if instance_id is not None:
            chosen = [i for i in candidates if i.instance_id == instance_id]
            if not chosen:
                raise NoInstances(
                    f"{self.component} instance {instance_id} is not live (or lacks {endpoint!r})"
                )
            return chosen[0]
        if not candidates:
            raise NoInstances(f"no live {self.component} instance serves {endpoint!r}")
        # Skip instances whose link just dropped: their lease may take up to its
        # TTL to expire, and until then they are still listed in etcd.
        reachable = [i for i in candidates if self._connections.reachable(i.address)]
        return self._router.choose(
            reachable or candidates, lambda i: self._connections.load(i.address), key
        )
