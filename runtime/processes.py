"""Child-process hygiene shared by the supervisor, the embedded etcd and tests."""

from __future__ import annotations

import ctypes
import signal
import subprocess

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn` that has the kernel SIGKILL the child when its parent dies.

    A supervisor killed with SIGKILL gets no chance to stop its children; this
    keeps it from leaving workers or an etcd behind. Linux only, like the rest
    of the runtime.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def stop_process(process: subprocess.Popen[bytes], grace_s: float) -> int:
    """SIGTERM, wait up to `grace_s`, then SIGKILL; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()
