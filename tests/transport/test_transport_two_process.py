"""Transfers between this process and a real peer process, over NIXL and over the tcp fallback.

Every test runs once per backend. Peers run in `auto` mode; the tcp peer gets
there because NIXL is made unloadable, so the fallback is exercised as in production.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
import weakref

import pytest
import torch
from conftest import PeerProcess, round_trip, start_peer
from transport_peer import digest, make_tensor

from transport import Connector, Descriptor, RdmaMetadata, ReadableState, TransferError

KiB, MiB = 1 << 10, 1 << 20


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality: random bit patterns include NaNs, which never compare equal."""
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    )


ROUND_TRIPS = [
    (dtype, nbytes) for dtype in ("float32", "bfloat16", "uint8") for nbytes in (KiB, MiB, 16 * MiB)
] + [("bfloat16", 256 * MiB)]  # one largest case: each costs seconds of setup, not of transfer


@pytest.mark.parametrize(("dtype", "nbytes"), ROUND_TRIPS)
async def test_round_trip_is_byte_exact(
    peer: PeerProcess, connector: Connector, dtype: str, nbytes: int
) -> None:
    seed = nbytes + len(dtype)
    (meta,) = (await peer.call("expose", dtype=dtype, nbytes=nbytes, seeds=[seed], lease_s=60))[
        "metas"
    ]

    (received,) = await connector.read(RdmaMetadata.from_dict(meta), timeout=60)

    expected = make_tensor(dtype, nbytes, seed)
    assert same_bytes(received, expected)
    assert await peer.call("wait", key=meta["key"], timeout=10) == {"state": "completed"}


async def test_concurrent_transfers(peer: PeerProcess, connector: Connector) -> None:
    seeds = list(range(100, 108))
    reply = await peer.call("expose", dtype="float32", nbytes=2 * MiB, seeds=seeds, lease_s=60)

    results = await asyncio.gather(
        *(connector.read(RdmaMetadata.from_dict(m), timeout=60) for m in reply["metas"])
    )

    for (received,), seed in zip(results, seeds, strict=True):
        assert same_bytes(received, make_tensor("float32", 2 * MiB, seed))
    for meta in reply["metas"]:
        assert (await peer.call("wait", key=meta["key"], timeout=10))["state"] == "completed"
    assert (await peer.call("stats"))["live_readables"] == 0


async def test_read_into_reuses_the_destination_registration(
    peer: PeerProcess, connector: Connector
) -> None:
    pool = torch.zeros(4, 64 * KiB, dtype=torch.uint8)
    metas = (await peer.call("expose", dtype="uint8", nbytes=64 * KiB, seeds=[7, 8], lease_s=60))[
        "metas"
    ]

    await connector.read_into(RdmaMetadata.from_dict(metas[0]), [Descriptor(pool[1])])
    registrations = connector.stats()["live_registrations"]
    await connector.read_into(RdmaMetadata.from_dict(metas[1]), [Descriptor(pool[3])])

    assert connector.stats()["live_registrations"] == registrations
    assert torch.equal(pool[1], make_tensor("uint8", 64 * KiB, 7).view(-1))
    assert torch.equal(pool[3], make_tensor("uint8", 64 * KiB, 8).view(-1))
    assert not pool[0].any() and not pool[2].any()


async def test_reading_a_cached_buffer_again_loads_the_peer_once_on_one_connection(
    peer: PeerProcess, connector: Connector
) -> None:
    """The producer's metadata for a buffer it exposes again is the same, so nothing is redone."""
    before = connector.stats()
    for _ in range(5):
        (meta,) = (
            await peer.call(
                "expose", dtype="uint8", nbytes=MiB, seeds=[31], lease_s=60, cached=True
            )
        )["metas"]
        (received,) = await connector.read(RdmaMetadata.from_dict(meta), timeout=60)
        assert same_bytes(received, make_tensor("uint8", MiB, 31))

    after = connector.stats()
    if after["backend"] == "nixl":
        assert after["nixl_peer_loads"] - before["nixl_peer_loads"] <= 1
    else:
        assert after["tcp_connects"] - before["tcp_connects"] <= 1


async def test_completion_frees_the_producer_buffer(
    peer: PeerProcess, connector: Connector
) -> None:
    tensor = make_tensor("bfloat16", 4 * MiB, seed=3)
    expected_digest = digest(tensor)
    storage = weakref.ref(tensor.untyped_storage())
    gc.collect()  # an earlier test's tensors, freed now, must not be counted as live in `before`
    before = connector.stats()
    op = await connector.create_readable([Descriptor(tensor)], lease_s=60)
    del tensor

    reply = await peer.call("read", metas=[op.metadata.to_dict()], timeout=60)
    await op.wait_for_completion(timeout=10)

    assert reply == {"digests": [[expected_digest]]}
    assert op.state is ReadableState.COMPLETED and op.descriptors is None
    gc.collect()
    assert storage() is None
    after = connector.stats()
    assert after["live_readables"] == 0
    assert after["live_registrations"] == before["live_registrations"]
    assert after["bytes_served"] - before["bytes_served"] == 4 * MiB


async def test_lease_expiry_frees_an_unpulled_buffer(connector: Connector) -> None:
    tensor = torch.ones(1 * MiB)
    storage = weakref.ref(tensor.untyped_storage())
    op = await connector.create_readable([Descriptor(tensor)], lease_s=0.2)
    del tensor

    with pytest.raises(TransferError, match="expired"):
        await op.wait_for_completion(timeout=10)

    assert op.state is ReadableState.EXPIRED
    gc.collect()
    assert storage() is None
    assert connector.stats()["live_readables"] == 0


async def test_killing_the_producer_mid_transfer_raises_promptly_and_its_successor_works(
    backend: str, connector: Connector
) -> None:
    doomed = start_peer(backend)
    try:
        (meta,) = (
            await doomed.call("expose", dtype="uint8", nbytes=16 * MiB, seeds=[1], lease_s=60)
        )["metas"]
        os.kill(doomed.pid, signal.SIGSTOP)  # freeze it, so the read is surely in flight
        read = asyncio.create_task(connector.read(RdmaMetadata.from_dict(meta), timeout=60))
        await asyncio.sleep(0.5)
        assert not read.done()

        os.kill(doomed.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(TransferError):
            await read
        assert time.monotonic() - started < 40  # the peer's death, not the 60 s timeout
    finally:
        doomed.stop()

    successor = start_peer(backend)  # as a supervisor restarts a dead worker
    try:
        await round_trip(successor, connector, seed=2)
    finally:
        successor.stop()


async def test_auto_picks_nixl_and_falls_back_to_tcp_with_a_warning(
    backend: str, peer: PeerProcess
) -> None:
    assert (await peer.call("stats"))["backend"] == backend
    warned = "falling back to the tcp transport" in peer.stderr_text()
    assert warned == (backend == "tcp")
