"""`Descriptor`: one contiguous memory region that a peer may read or fill.

Everything is normalised to a torch tensor that shares the caller's memory, so
the backends deal with one type and the storage lifetime (which decides when a
NIXL registration may be dropped) is always a torch storage.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from transport.metadata import TensorSpec, dtype_name

BufferLike = torch.Tensor | np.ndarray | bytes | bytearray | memoryview


class Descriptor:
    """A contiguous tensor, numpy array or bytes object, without copying it.

    `writable` is False for read-only sources (bytes, read-only arrays): they can
    be exposed to a peer but never used as a destination of `read_into`.
    """

    def __init__(self, data: BufferLike) -> None:
        self.tensor, self.writable = _as_tensor(data)
        if not self.tensor.is_contiguous():
            raise ValueError("Descriptor needs a contiguous tensor; call .contiguous() first")
        if self.tensor.numel() == 0:
            raise ValueError("Descriptor needs a non-empty tensor; there is nothing to transfer")

    @property
    def ptr(self) -> int:
        return self.tensor.data_ptr()

    @property
    def nbytes(self) -> int:
        return self.tensor.numel() * self.tensor.element_size()

    @property
    def mem_type(self) -> str:
        """NIXL's name for where the bytes live: host DRAM or GPU VRAM."""
        return "VRAM" if self.tensor.is_cuda else "DRAM"

    @property
    def device_id(self) -> int:
        if not self.tensor.is_cuda:
            return 0
        return self.tensor.device.index or 0

    @property
    def spec(self) -> TensorSpec:
        return TensorSpec(shape=tuple(self.tensor.shape), dtype=dtype_name(self.tensor.dtype))

    def as_bytes_view(self) -> memoryview:
        """The raw bytes of a host tensor, zero-copy (bfloat16 included)."""
        return memoryview(self.tensor.view(-1).view(torch.uint8).numpy())

    def __repr__(self) -> str:
        spec = self.spec
        return f"Descriptor({spec.dtype}{list(spec.shape)}, {self.mem_type}, {self.nbytes} B)"


def _as_tensor(data: BufferLike) -> tuple[torch.Tensor, bool]:
    if isinstance(data, torch.Tensor):
        return data.detach(), True
    if isinstance(data, np.ndarray):
        if not data.flags.c_contiguous:
            raise ValueError("Descriptor needs a C-contiguous array; call np.ascontiguousarray")
        return _without_readonly_warning(torch.from_numpy, data), bool(data.flags.writeable)
    if isinstance(data, bytes | bytearray | memoryview):
        writable = not (isinstance(data, bytes) or (isinstance(data, memoryview) and data.readonly))
        tensor = _without_readonly_warning(torch.frombuffer, data, dtype=torch.uint8)
        return tensor, writable
    raise TypeError(f"Descriptor takes a torch.Tensor, numpy array or bytes, not {type(data)}")


def _without_readonly_warning(make, *args, **kwargs) -> torch.Tensor:
    # torch warns that writing through a tensor over read-only memory is undefined;
    # `Descriptor.writable` records that instead, and `read_into` refuses such targets.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return make(*args, **kwargs)
