"""Run a graph as a child `vidgraph serve` process until its frontend reports healthy.

The demo, the graph tests and the benchmarks all need "a real graph on a free
port, stopped cleanly afterwards"; this is that, once. The child gets its own
process group so that stopping it can never leave a worker or etcd behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from runtime.ports import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RunningGraph:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def etcd_address(self) -> str:
        """The embedded etcd's HOST:PORT, for workers started beside the graph."""
        found = re.search(r"started etcd on (\S+)", self.log())
        if found is None:
            raise RuntimeError("this graph uses an external etcd (no 'started etcd' line)")
        return found.group(1)


@contextmanager
def serve_graph(
    graph: str,
    config: Path,
    *overrides: str,
    log_path: Path,
    startup_timeout_s: float = 300.0,
) -> Iterator[RunningGraph]:
    """`vidgraph serve GRAPH -f CONFIG OVERRIDES...` on a free port, healthy, then stopped."""
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("vidgraph")),
        "serve",
        graph,
        "-f",
        str(config),
        f"--Frontend.port={port}",
        "--Frontend.host=127.0.0.1",
        *overrides,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    running = RunningGraph(process, port, log_path)
    try:
        _wait_healthy(running, startup_timeout_s)
        yield running
    finally:
        _stop(process)


def _wait_healthy(running: RunningGraph, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise RuntimeError(
                f"vidgraph serve exited with {running.process.returncode}:\n{running.log()}"
            )
        try:
            if httpx.get(f"{running.base_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the graph was not healthy after {timeout_s:.0f} s:\n{running.log()}")


def _stop(process: subprocess.Popen[bytes], grace_s: float = 60.0) -> None:
    """SIGTERM (drain, then stop every child); SIGKILL the whole group if that hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
