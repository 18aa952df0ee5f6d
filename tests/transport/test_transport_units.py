"""Single-process tests: metadata, descriptors, the registration cache, connector rules."""

from __future__ import annotations

import gc

import msgpack
import numpy as np
import pytest
import torch

from transport import (
    Connector,
    Descriptor,
    NixlEndpoint,
    RdmaMetadata,
    TcpEndpoint,
    TensorSpec,
    TransferError,
)
from transport.registry import RegistrationCache

BF16_AND_BYTES = (TensorSpec((4, 4), "bfloat16"), TensorSpec((2,), "uint8"))


@pytest.mark.parametrize(
    "endpoint",
    [
        NixlEndpoint("agent-1", b"\x00md\xff", "DRAM", ((4096, 32, 0), (8192, 2, 0))),
        TcpEndpoint("10.0.0.7", 5555),
    ],
)
def test_metadata_survives_msgpack(endpoint: NixlEndpoint | TcpEndpoint) -> None:
    meta = RdmaMetadata(key="k", tensors=BF16_AND_BYTES, endpoint=endpoint)

    wire = msgpack.unpackb(msgpack.packb(meta.to_dict()))

    assert RdmaMetadata.from_dict(wire) == meta
    assert meta.nbytes == 34


@pytest.mark.parametrize(
    "broken",
    [
        {},
        {"key": "k", "backend": "carrier-pigeon", "tensors": [], "endpoint": {}},
        {
            "key": "k",
            "backend": "tcp",
            "tensors": [{"shape": [1], "dtype": "float99"}],
            "endpoint": {"host": "h", "port": 1},
        },
        {
            "key": "k",
            "backend": "nixl",
            "tensors": [{"shape": [1], "dtype": "uint8"}],
            "endpoint": {
                "agent_name": "a",
                "agent_metadata": b"",
                "mem_type": "DRAM",
                "regions": [],
            },
        },
    ],
)
def test_malformed_metadata_is_a_value_error(broken: dict) -> None:
    with pytest.raises(ValueError):
        RdmaMetadata.from_dict(broken)


def test_descriptor_shares_memory_and_knows_its_spec() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    desc = Descriptor(array)
    array[0, 0] = 42.0

    assert desc.tensor[0, 0].item() == 42.0
    assert desc.spec == TensorSpec((2, 3), "float32")
    assert (desc.nbytes, desc.mem_type, desc.writable) == (24, "DRAM", True)
    assert Descriptor(b"abc").writable is False
    assert Descriptor(bytearray(b"abc")).writable is True


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (torch.zeros(4, 4).t(), "contiguous"),
        (torch.zeros(0), "non-empty"),
        (np.zeros((4, 4))[:, 1], "C-contiguous"),
    ],
)
def test_descriptor_rejects_what_cannot_be_transferred(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Descriptor(data)


class FakeNixl:
    def __init__(self) -> None:
        self.registered: list[tuple] = []
        self.deregistered: list[tuple] = []

    def register(self, region: tuple) -> tuple:
        self.registered.append(region)
        return region

    def deregister(self, handle: tuple) -> None:
        self.deregistered.append(handle)


def test_registration_cache_registers_a_storage_once_and_drops_it_when_freed() -> None:
    nixl = FakeNixl()
    cache = RegistrationCache(nixl.register, nixl.deregister)
    pool = torch.zeros(8, 1024)

    regions = {cache.ensure(Descriptor(pool[i])) for i in range(8)}

    assert len(regions) == 1 and len(nixl.registered) == 1 and len(cache) == 1
    (region,) = regions
    assert region[2:] == (pool.data_ptr(), pool.numel() * 4)
    del pool, regions
    gc.collect()
    assert len(cache) == 0 and nixl.deregistered == [region]


async def test_read_into_refuses_mismatched_or_readonly_buffers() -> None:
    meta = RdmaMetadata("k", (TensorSpec((4,), "float32"),), TcpEndpoint("127.0.0.1", 1))
    conn = Connector("tcp")

    with pytest.raises(ValueError, match="holds 8 B"):
        await conn.read_into(meta, [Descriptor(torch.zeros(2))])
    with pytest.raises(ValueError, match="read-only"):
        await conn.read_into(meta, [Descriptor(bytes(16))])
    with pytest.raises(ValueError, match="2 buffers"):
        await conn.read_into(meta, [Descriptor(torch.zeros(4)), Descriptor(torch.zeros(4))])


async def test_tcp_read_of_an_unknown_key_names_the_cause() -> None:
    producer, consumer = Connector("tcp"), Connector("tcp")
    op = await producer.create_readable([Descriptor(torch.ones(4))])
    stale = RdmaMetadata("no-such-key", op.metadata.tensors, op.metadata.endpoint)
    try:
        with pytest.raises(TransferError, match="no live readable"):
            await consumer.read(stale, timeout=5)
        assert consumer.stats()["read_failures"] == 1
    finally:
        producer.close()


async def test_released_readable_frees_at_once() -> None:
    conn = Connector("tcp")
    op = await conn.create_readable([Descriptor(torch.ones(4))], lease_s=60)
    op.release()
    with pytest.raises(TransferError, match="released"):
        await op.wait_for_completion(timeout=1)
    assert conn.stats()["live_readables"] == 0
    conn.close()


def test_get_is_a_singleton_that_refuses_conflicting_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Another test in this process may hold the process-wide connector (with other
    # settings): this one starts from none and gives the other back afterwards.
    monkeypatch.setattr(Connector, "_instance", None)
    first = Connector.get("tcp", host="127.0.0.1")
    try:
        assert Connector.get() is first and Connector.get("tcp") is first
        with pytest.raises(ValueError, match="backend='nixl'"):
            Connector.get("nixl")
    finally:
        first.close()
    assert Connector.get("tcp") is not first
    Connector.get().close()


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="one of"):
        Connector("rdma")
