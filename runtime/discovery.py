"""Who is alive, through etcd: one lease per process, instances listed then watched.

Every worker process holds one lease and puts one key per endpoint it serves,

    vidgraph/{namespace}/{component}/{endpoint}/{instance_id} -> msgpack {host, port, pid, ...}

attached to that lease. A clean stop revokes the lease, so its keys vanish at
once; a killed process stops refreshing it, so they vanish within the TTL.
Callers list a component's prefix once, then watch it from the next revision,
and list again whenever the watch breaks, so a missed event can never leave a
dead instance on the list for longer than one reconnect. While etcd is away,
everyone keeps the last membership they saw and keeps serving (see
`runtime.lease`); nothing exits because etcd did.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aetcd

from protocol import codec
from runtime.etcd_access import EtcdAccess
from runtime.lease import LeaseKeeper
from runtime.secret import SECRET_FILE_ENV, GraphSecret

log = logging.getLogger(__name__)

KEY_ROOT = "vidgraph"
LEASE_TTL_S = 10
# Back-off between attempts to list (watchers) or re-register (after a lapse).
FIRST_RETRY_S = 0.1
MAX_RETRY_S = 5.0


def component_prefix(namespace: str, component: str) -> str:
    return f"{KEY_ROOT}/{namespace}/{component}/"


@dataclass(frozen=True)
class Instance:
    """One live worker process of a component, as registered in etcd."""

    component: str
    instance_id: str
    host: str
    port: int
    pid: int
    started_at: float
    endpoints: frozenset[str]
    model: dict[str, Any] | None = field(default=None, compare=False)
    """The model card it registered (`Component.model_card()`): name and type, e.g. videos."""
    capacity: int | None = field(default=None, compare=False)
    """The requests it runs at once, as registered (`Component.capacity()`); None: unbounded."""

    @property
    def address(self) -> str:
        """The ZeroMQ address of the worker's request-plane socket."""
        return f"tcp://{self.host}:{self.port}"


class Discovery:
    """This process's etcd session: its lease, its registrations, its watchers."""

    def __init__(
        self, client: aetcd.Client, lease: aetcd.Lease, namespace: str, etcd: EtcdAccess
    ) -> None:
        if "/" in namespace or not namespace:
            raise ValueError(f"namespace {namespace!r} must be a non-empty name without '/'")
        self.namespace = namespace
        self.instance_id = f"{lease.id:x}"
        self._client = client
        self._lease = lease
        self._watchers: dict[str, InstanceWatcher] = {}
        self._registrations: list[tuple[str, tuple[str, ...], bytes]] = []
        self._relisting = asyncio.Lock()
        self._revoked = False
        loop = asyncio.get_running_loop()
        self._keeper = LeaseKeeper(
            etcd,
            lease.id,
            lease.ttl,
            on_expired=lambda lease_id: loop.call_soon_threadsafe(self._lapsed, lease_id),
        )
        self._coming_back: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        etcd_address: str,
        namespace: str,
        lease_ttl_s: int = LEASE_TTL_S,
        secret: GraphSecret | None = None,
    ) -> Discovery:
        """Connect to etcd, check it lets us in, and take this process's lease."""
        etcd = EtcdAccess.parse(etcd_address, secret)
        client = etcd.client(timeout_s=5)
        try:
            await client.get(component_prefix(namespace, "").encode())  # etcd grants leases to all
            lease = await client.lease(lease_ttl_s)
        except (aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError) as error:
            await client.close()
            raise ConnectionError(
                f"cannot reach etcd at {etcd_address} ({error}); start one or drop --etcd "
                "to let `vidgraph serve` start its own"
            ) from error
        except aetcd.ClientError as error:
            await client.close()
            raise ConnectionError(
                f"etcd at {etcd_address} refused this process ({error}): a graph with a secret "
                f"admits only processes given the same one ({SECRET_FILE_ENV})"
            ) from error
        return cls(client, lease, namespace, etcd)

    def _lapsed(self, lease_id: int) -> None:
        """etcd says our lease is gone: register again (in the background, until it works)."""
        if self._revoked or lease_id != self._lease.id:
            return
        if self._coming_back is None or self._coming_back.done():
            self._coming_back = asyncio.create_task(self._come_back_until_done())

    async def _come_back_until_done(self) -> None:
        delay = FIRST_RETRY_S
        while not self._revoked and not await self._come_back():
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_S)

    async def _come_back(self) -> bool:
        """Register again under a new lease (and so a new instance id) after the old one lapsed.

        A lease lapses when this process could not reach etcd for a whole TTL
        (a partition, a paused process). Callers have forgotten this instance by
        then; coming back as a fresh instance costs them nothing, while exiting
        would cost a restart and a model reload. Returns False while etcd will
        not grant a lease (the caller retries).
        """
        async with self._relisting:
            old = self.instance_id
            try:
                lease = await asyncio.wait_for(self._client.lease(self._lease.ttl), self._lease.ttl)
                await self._forget(self._lease)
                self._lease = lease
                self.instance_id = f"{lease.id:x}"
                self._keeper.use(lease.id)
                for registration in self._registrations:
                    await self._put(*registration)
            except Exception as error:  # etcd away or half back: try again later
                log.warning("lease %s expired and no new one yet (%s); retrying", old, error)
                return False
            log.warning("lease %s expired; registered again as %s", old, self.instance_id)
            return True

    async def _forget(self, lease: aetcd.Lease) -> None:
        """Revoke a superseded lease, if etcd still has it.

        We come back under a new lease also when a registration only timed out:
        etcd may have stored it all the same, and that twin would stay listed for
        a whole TTL beside the new one. Revoking the old lease removes it now.
        """
        try:
            await asyncio.wait_for(lease.revoke(), lease.ttl)
        except Exception as error:  # already expired, or etcd away: it expires on its own
            log.info("superseded lease %x not revoked (%s)", lease.id, error)

    async def register(
        self,
        component: str,
        endpoints: Iterable[str],
        host: str,
        port: int,
        model: dict[str, Any] | None = None,
        capacity: int | None = None,
    ) -> None:
        """Announce this process as an instance of `component` serving `endpoints` (and `model`,
        running up to `capacity` requests at once)."""
        info = codec.encode(
            {
                "host": host,
                "port": port,
                "pid": os.getpid(),
                "started_at": time.time(),
                **({"model": model} if model is not None else {}),
                **({"capacity": capacity} if capacity is not None else {}),
            }
        )
        registration = (component, tuple(endpoints), info)
        self._registrations.append(registration)
        try:
            # A fresh TTL from now on: a long start() may have left the lease
            # moments from lapsing, which would drop us right after registering.
            await self._lease.refresh()
            await self._put(*registration)
        except aetcd.ClientError as error:
            log.warning("registering under lease %s failed (%s)", self.instance_id, error)
            await self._come_back_until_done()

    async def _put(self, component: str, endpoints: tuple[str, ...], info: bytes) -> None:
        """Write one key per endpoint in a single transaction.

        One revision for all of them, so a watcher never sees the instance with
        only some of its endpoints (and routes nothing it should to it meanwhile).
        """
        prefix = component_prefix(self.namespace, component)
        puts = self._client.transactions
        await self._client.transaction(
            compare=[],
            success=[
                puts.put(f"{prefix}{endpoint}/{self.instance_id}".encode(), info, lease=self._lease)
                for endpoint in endpoints
            ],
            failure=[],
        )

    def watch(
        self, component: str, on_vanish: Callable[[Instance], None] | None = None
    ) -> InstanceWatcher:
        """The live instances of `component`, kept current in the background (one per name)."""
        if component not in self._watchers:
            self._watchers[component] = InstanceWatcher(
                self._client, self.namespace, component, on_vanish
            )
        return self._watchers[component]

    async def revoke(self) -> None:
        """Give up the lease: every key this process registered vanishes for everyone at once."""
        if self._revoked:
            return
        self._revoked = True
        await asyncio.to_thread(self._keeper.stop)
        if self._coming_back is not None:
            self._coming_back.cancel()
        try:
            await asyncio.wait_for(self._lease.revoke(), 5)
        except (aetcd.ClientError, TimeoutError) as error:
            log.warning("could not revoke lease (it will expire on its own): %s", error)

    async def close(self) -> None:
        """Revoke the lease if still held, stop watching, disconnect."""
        await self.revoke()
        for watcher in self._watchers.values():
            await watcher.close()
        await self._client.close()


_REGISTRATION_FIELDS = {"host": str, "port": int, "pid": int, "started_at": (int, float)}


def _registration(value: bytes) -> dict | None:
    """A registration's `{host, port, pid, started_at}`, or None (logged) if it is not one."""
    try:
        info = codec.decode(value)
        if isinstance(info, dict) and all(
            isinstance(info.get(name), kind) for name, kind in _REGISTRATION_FIELDS.items()
        ):
            return info
    except Exception:  # msgpack raises many types for garbage
        pass
    log.warning("ignoring a malformed registration in etcd: %r", value[:80])
    return None


def _capacity(info: dict) -> int | None:
    """A registration's capacity; one that is not a positive count (a newer writer's) is none."""
    capacity = info.get("capacity")
    return capacity if type(capacity) is int and capacity > 0 else None


class InstanceWatcher:
    """The instances of one component: listed once, then kept current by a watch."""

    def __init__(
        self,
        client: aetcd.Client,
        namespace: str,
        component: str,
        on_vanish: Callable[[Instance], None] | None,
    ) -> None:
        self.component = component
        self.ready = asyncio.Event()
        self._client = client
        self._prefix = component_prefix(namespace, component)
        self._on_vanish = on_vanish
        self._keys: dict[str, dict | None] = {}
        self._instances: dict[str, Instance] = {}
        self.failures = 0  # times the list/watch broke and was started again
        self._task = asyncio.create_task(self._follow())

    def instances(self, endpoint: str | None = None) -> list[Instance]:
        """Live instances (serving `endpoint`, if given), ordered by instance id."""
        return [
            instance
            for _, instance in sorted(self._instances.items())
            if endpoint is None or endpoint in instance.endpoints
        ]

    async def _follow(self) -> None:
        """List, then watch; on any failure, back off and list again (keeping what we know)."""
        delay = FIRST_RETRY_S
        while True:
            try:
                listing = await self._client.get_prefix(self._prefix.encode())
                self._keys = {kv.key.decode(): _registration(kv.value) for kv in listing}
                self._rebuild()
                self.ready.set()
                delay = FIRST_RETRY_S
                watch = await self._client.watch_prefix(
                    self._prefix.encode(), start_revision=listing.header.revision + 1
                )
                async for event in watch:
                    key = event.kv.key.decode()
                    if event.kind == aetcd.EventKind.PUT:
                        self._keys[key] = _registration(event.kv.value)
                    else:
                        self._keys.pop(key, None)
                    self._rebuild()
                log.warning("watch on %s ended; listing again", self._prefix)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # whatever broke, the cure is the same: list again
                self.failures += 1
                log.warning(
                    "watch on %s broke (%s: %s); listing again in %.1f s",
                    self._prefix,
                    type(error).__name__,
                    error,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_S)

    def _rebuild(self) -> None:
        endpoints: dict[str, set[str]] = {}
        info: dict[str, dict] = {}
        for key, value in self._keys.items():
            endpoint, _, instance_id = key.removeprefix(self._prefix).partition("/")
            if value is None or not instance_id:
                continue  # not a registration of ours (logged when read)
            endpoints.setdefault(instance_id, set()).add(endpoint)
            info[instance_id] = value
        previous = self._instances
        self._instances = {
            instance_id: Instance(
                component=self.component,
                instance_id=instance_id,
                host=info[instance_id]["host"],
                port=info[instance_id]["port"],
                pid=info[instance_id]["pid"],
                started_at=info[instance_id]["started_at"],
                endpoints=frozenset(names),
                model=info[instance_id].get("model"),
                capacity=_capacity(info[instance_id]),
            )
            for instance_id, names in endpoints.items()
        }
        if self._on_vanish is not None:
            for instance_id, instance in previous.items():
                if instance_id not in self._instances:
                    self._on_vanish(instance)

    async def close(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
