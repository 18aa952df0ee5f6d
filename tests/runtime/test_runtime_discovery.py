"""Discovery on a real etcd: register, list, watch, revoke, expire after a kill."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from runtime import DistributedRuntime
from runtime.discovery import LEASE_TTL_S
from runtime.etcd_server import EtcdServer
from runtime.processes import dies_with_parent, stop_process

pytestmark = pytest.mark.timeout(60)


async def nothing(request: object, ctx: object):
    yield request


async def wait_until(condition, timeout_s: float) -> float:
    """Seconds until `condition()` held; fails after `timeout_s`."""
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout_s, "condition not met in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - began


async def test_watch_sees_registrations_and_a_clean_stop_at_once(
    etcd: EtcdServer, namespace: str, runtime: DistributedRuntime
) -> None:
    first = await DistributedRuntime.connect(etcd.address, namespace)
    server = first.serve({"encode": nothing}, "127.0.0.1")
    await first.register("EncodeWorker", ["encode"], server)
    client = runtime.client("EncodeWorker")
    (listed,) = await client.wait_for_instances(1, timeout_s=5)

    assert listed.instance_id == first.instance_id
    assert listed.address == f"tcp://127.0.0.1:{server.port}"
    assert listed.pid == os.getpid()
    assert listed.endpoints == {"encode"}

    second = await DistributedRuntime.connect(etcd.address, namespace)
    await second.register("EncodeWorker", ["encode", "warm"], second.serve({}, "127.0.0.1"))
    await wait_until(lambda: len(client.instances()) == 2, timeout_s=5)
    assert [i.instance_id for i in client.instances("warm")] == [second.instance_id]

    await first.close()
    # Well before its lease (LEASE_TTL_S) could lapse: the clean stop deleted the registration.
    await wait_until(lambda: len(client.instances()) == 1, timeout_s=LEASE_TTL_S / 2)
    await second.close()
    await wait_until(lambda: client.instances() == [], timeout_s=5)


REGISTER_AND_SLEEP = """
import asyncio, sys
from runtime import DistributedRuntime

async def main():
    runtime = await DistributedRuntime.connect(sys.argv[1], sys.argv[2], lease_ttl_s=3)
    await runtime.register("Doomed", ["work"], runtime.serve({}, "127.0.0.1"))
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_killed_process_vanishes_within_its_lease_ttl(
    etcd: EtcdServer, namespace: str, runtime: DistributedRuntime
) -> None:
    process = subprocess.Popen(
        dies_with_parent([sys.executable, "-c", REGISTER_AND_SLEEP, etcd.address, namespace])
    )
    try:
        client = runtime.client("Doomed")
        (instance,) = await client.wait_for_instances(1, timeout_s=10)
        assert instance.pid == process.pid
        # Longer than a TTL: the keep-alive holds the registration.
        await asyncio.sleep(4)
        assert client.instances() == [instance]

        os.kill(process.pid, signal.SIGKILL)
        # Its 3 s lease lapses, well before the registry's default TTL would: a generous
        # bound, since etcd and this watcher share a loaded machine.
        await wait_until(lambda: client.instances() == [], timeout_s=LEASE_TTL_S - 1)
    finally:
        stop_process(process, grace_s=1)


async def test_watchers_list_again_when_etcd_comes_back(namespace: str) -> None:
    first_etcd = EtcdServer()
    first_etcd.start()
    second_etcd = EtcdServer(port=first_etcd.port)
    caller = await DistributedRuntime.connect(first_etcd.address, namespace)
    old = await DistributedRuntime.connect(first_etcd.address, namespace)
    new: DistributedRuntime | None = None
    try:
        await old.register("Echo", ["echo"], old.serve({}, "127.0.0.1"))
        client = caller.client("Echo")
        await client.wait_for_instances(1, timeout_s=5)

        # A fresh etcd on the same port knows nothing of `old`: only a new
        # listing (the watch broke with the old server) can show `new`. (`old`
        # may show up too, once it notices its lease is gone and registers again.)
        first_etcd.stop()
        second_etcd.start()
        new = await DistributedRuntime.connect(second_etcd.address, namespace)
        await new.register("Echo", ["echo"], new.serve({}, "127.0.0.1"))
        await wait_until(
            lambda: new.instance_id in [i.instance_id for i in client.instances()], timeout_s=20
        )
    finally:
        for runtime in (new, old, caller):
            if runtime is not None:
                await runtime.close()
        first_etcd.stop()
        second_etcd.stop()


async def test_an_instance_whose_lease_lapsed_registers_again_under_a_new_id(
    etcd: EtcdServer, namespace: str, runtime: DistributedRuntime
) -> None:
    """A lapse (here: the lease revoked behind the process's back) is survived, not fatal."""
    worker = await DistributedRuntime.connect(etcd.address, namespace, lease_ttl_s=3)
    await worker.register(
        "EncodeWorker", ["encode"], worker.serve({"encode": nothing}, "127.0.0.1")
    )
    client = runtime.client("EncodeWorker")
    (before,) = await client.wait_for_instances(1, timeout_s=5)

    await runtime.discovery._client.revoke_lease(int(before.instance_id, 16))
    await wait_until(
        lambda: [i.instance_id for i in client.instances()] not in ([], [before.instance_id]), 10
    )

    (after,) = client.instances()
    assert after.instance_id == worker.instance_id != before.instance_id
    assert after.address == before.address
    await worker.close()
