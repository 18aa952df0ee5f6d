"""Child-process hygiene shared by the supervisor, the embedded etcd and tests.

Run as a script, this file is the tiny launcher behind `dies_with_parent`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def dies_with_parent(command: Sequence[str]) -> list[str]:
    """`command`, wrapped so that the kernel SIGKILLs it when this process dies.

    A supervisor killed with SIGKILL gets no chance to stop its children; this
    keeps it from leaving workers or an etcd behind. The wrapper is a separate
    launcher rather than a `preexec_fn` because running Python between fork and
    exec in a process with gRPC threads (aetcd) can deadlock the child.
    """
    return [sys.executable, "-I", __file__, str(os.getpid()), *command]


def alive(pid: int) -> bool:
    """Whether process `pid` still runs; a zombie (dead, not yet reaped) does not.

    `os.kill(pid, 0)` succeeds on a zombie, and a SIGKILLed worker stays one until
    its supervisor reaps it, so that check would report a dead worker alive.
    """
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stop_process(process: subprocess.Popen[bytes], grace_s: float) -> int:
    """SIGTERM, wait up to `grace_s`, then SIGKILL; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def _exec_with_parent_death_signal(parent_pid: int, command: list[str]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # survives the exec below
    if os.getppid() != parent_pid:
        sys.exit("vidgraph: parent died before the child started")
    os.execvp(command[0], command)


if __name__ == "__main__":
    _exec_with_parent_death_signal(int(sys.argv[1]), sys.argv[2:])
