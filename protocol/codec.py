"""The msgpack codec for every message that crosses a process boundary.

msgpack rather than JSON because tensors' small neighbours (token ids, NIXL
metadata, the tcp fallback's raw bytes) travel as binary without base64.
Pydantic models are sent as their `model_dump()`; the receiver gets plain
dicts and validates them into its own model, so both sides never have to
share class identities.
"""

from __future__ import annotations

from typing import Any

import msgpack
from pydantic import BaseModel


def _to_builtin(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump()
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(
        f"cannot encode {type(obj).__name__} as msgpack; send dicts, lists, scalars, bytes "
        "or pydantic models"
    )


def encode(obj: Any) -> bytes:
    """Pack `obj`; bytes stay bytes (msgpack bin), str stays str."""
    return msgpack.packb(obj, default=_to_builtin, use_bin_type=True)


def decode(data: bytes) -> Any:
    """Unpack what `encode` packed; arrays come back as lists, maps as dicts."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
