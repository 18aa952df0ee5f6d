"""Keeping this process's etcd lease alive, from a thread of its own.

The refresh must not wait behind the work: a worker's event loop can be busy
for seconds (a model load, a long forward pass holding it), and a lease that
lapses for that reason drops a healthy instance from every caller's list. So
the keep-alive runs on its own thread, with its own event loop and its own
etcd connection, and tells the owner's loop only when etcd says the lease is
gone (then the owner registers again under a new one).

While etcd is unreachable the keeper just keeps trying: the process goes on
serving with the membership it knows. etcd extends every lease by its TTL when
it comes back (a new leader does), so after an outage of any length the same
lease is usually refreshed again and nobody notices; if not, etcd answers that
it expired and the owner re-registers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import aetcd

from runtime.etcd_access import EtcdAccess

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Refreshes lease `lease_id` every TTL/3; calls `on_expired(lease_id)` when etcd drops it.

    `on_expired` runs on the keeper's thread: hand it over to your own loop
    (`loop.call_soon_threadsafe`). After re-registering, `use()` the new lease.
    """

    def __init__(
        self, etcd: EtcdAccess, lease_id: int, ttl_s: int, on_expired: Callable[[int], None]
    ) -> None:
        self.lease_id = lease_id
        self.refreshed = 0  # successful refreshes, for tests and logs
        self._etcd = etcd
        self._interval_s = max(ttl_s / 3, 0.2)
        self._on_expired = on_expired
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="etcd-lease-keeper", daemon=True)
        self._thread.start()

    def use(self, lease_id: int) -> None:
        """Keep `lease_id` alive from now on (the old one expired)."""
        self.lease_id = lease_id

    def stop(self) -> None:
        """Stop refreshing (the lease then expires within its TTL unless revoked)."""
        self._stopping.set()
        self._thread.join(timeout=self._interval_s + 1)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            client = loop.run_until_complete(self._connect())
            reported: int | None = None  # the expired lease already reported
            unreachable = False
            while not self._stopping.wait(self._interval_s):
                lease_id = self.lease_id
                try:
                    ttl = loop.run_until_complete(self._refresh(client, lease_id))
                except Exception as error:  # anything at all: keep trying
                    if not unreachable:
                        log.warning("etcd unreachable (%s); serving on, retrying", error)
                    unreachable = True
                    continue
                if unreachable:
                    log.info("etcd reachable again (lease %x: TTL %d s left)", lease_id, ttl)
                    unreachable = False
                if ttl > 0:
                    self.refreshed += 1
                elif reported != lease_id:
                    reported = lease_id
                    self._on_expired(lease_id)
            loop.run_until_complete(client.close())
        finally:
            loop.close()

    async def _connect(self) -> aetcd.Client:
        return self._etcd.client(timeout_s=max(1, int(self._interval_s)))

    async def _refresh(self, client: aetcd.Client, lease_id: int) -> int:
        reply = await asyncio.wait_for(client.refresh_lease(lease_id), self._interval_s)
        return reply.TTL
