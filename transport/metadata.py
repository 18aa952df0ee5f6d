"""`RdmaMetadata`: what a consumer needs to pull a producer's tensors.

It travels inside a request-plane reply, so it converts to and from a plain
msgpack-able dict. The endpoint says which backend serves the bytes; shapes and
dtypes let the consumer allocate matching tensors before pulling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


def dtype_name(dtype: torch.dtype) -> str:
    """'bfloat16' for torch.bfloat16: a name any process can map back."""
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r} in transfer metadata")
    return dtype


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return torch.Size(self.shape).numel() * dtype_from_name(self.dtype).itemsize


@dataclass(frozen=True)
class NixlEndpoint:
    """A NIXL agent plus the remote regions (address, length, device id) to READ."""

    agent_name: str
    agent_metadata: bytes
    mem_type: str
    regions: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class TcpEndpoint:
    """The producer's fallback byte server; the key selects the readable."""

    host: str
    port: int


Endpoint = NixlEndpoint | TcpEndpoint


@dataclass(frozen=True)
class RdmaMetadata:
    key: str
    tensors: tuple[TensorSpec, ...]
    endpoint: Endpoint

    @property
    def backend(self) -> str:
        return "nixl" if isinstance(self.endpoint, NixlEndpoint) else "tcp"

    @property
    def nbytes(self) -> int:
        return sum(spec.nbytes for spec in self.tensors)

    def to_dict(self) -> dict[str, Any]:
        endpoint = self.endpoint
        if isinstance(endpoint, NixlEndpoint):
            fields: dict[str, Any] = {
                "agent_name": endpoint.agent_name,
                "agent_metadata": endpoint.agent_metadata,
                "mem_type": endpoint.mem_type,
                "regions": [list(region) for region in endpoint.regions],
            }
        else:
            fields = {"host": endpoint.host, "port": endpoint.port}
        return {
            "key": self.key,
            "backend": self.backend,
            "tensors": [{"shape": list(s.shape), "dtype": s.dtype} for s in self.tensors],
            "endpoint": fields,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RdmaMetadata:
        try:
            tensors = tuple(
                TensorSpec(shape=tuple(int(n) for n in t["shape"]), dtype=str(t["dtype"]))
                for t in data["tensors"]
            )
            fields = data["endpoint"]
            backend = data["backend"]
            if backend == "nixl":
                endpoint: Endpoint = NixlEndpoint(
                    agent_name=str(fields["agent_name"]),
                    agent_metadata=bytes(fields["agent_metadata"]),
                    mem_type=str(fields["mem_type"]),
                    regions=tuple((int(a), int(n), int(d)) for a, n, d in fields["regions"]),
                )
            elif backend == "tcp":
                endpoint = TcpEndpoint(host=str(fields["host"]), port=int(fields["port"]))
            else:
                raise ValueError(f"unknown transfer backend {backend!r}")
            meta = cls(key=str(data["key"]), tensors=tensors, endpoint=endpoint)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed transfer metadata: {exc!r}") from exc
        for spec in tensors:
            dtype_from_name(spec.dtype)
        if isinstance(endpoint, NixlEndpoint) and len(endpoint.regions) != len(tensors):
            raise ValueError("malformed transfer metadata: one NIXL region per tensor expected")
        return meta
