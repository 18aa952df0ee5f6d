"""The data plane: move big tensors between processes over NIXL (or TCP as a fallback).

conn = Connector.get()                         # per process
op = await conn.create_readable([Descriptor(t)])   # producer
reply["tensors"] = op.metadata.to_dict()
tensors = await conn.read(RdmaMetadata.from_dict(d))   # consumer
"""

from transport.connector import Connector
from transport.descriptor import Descriptor
from transport.errors import TransferError, TransferTimeout
from transport.metadata import NixlEndpoint, RdmaMetadata, TcpEndpoint, TensorSpec
from transport.readable import ReadableOperation, ReadableState

__all__ = [
    "Connector",
    "Descriptor",
    "NixlEndpoint",
    "RdmaMetadata",
    "ReadableOperation",
    "ReadableState",
    "TcpEndpoint",
    "TensorSpec",
    "TransferError",
    "TransferTimeout",
]
