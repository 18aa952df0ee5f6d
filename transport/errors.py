"""Errors raised by the data plane.

Callers catch `TransferError` to turn any failed pull into a request-plane error;
`TransferTimeout` is separate so they can retry a slow peer but not a dead one.
"""


class TransferError(RuntimeError):
    """A transfer failed: the peer died, the buffer is gone, or the metadata is stale."""


class TransferTimeout(TransferError, TimeoutError):
    """A transfer or a wait for completion did not finish within its timeout."""
