"""A graph spread over simulated hosts: each worker a `python -m runtime.worker` on its host.

This is how a user runs the graph on several machines without Kubernetes: one
etcd somewhere, then on each machine the workers it should run, all pointed
at that etcd and each listening on its machine's address.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from deploy.netns import Host

ETCD_PORT = 2379  # every host has its own ports: the well-known ones are always free
HTTP_PORT = 8000


class SpreadGraph:
    """One graph's processes on simulated hosts, logs under `log_dir`."""

    def __init__(self, graph: str, config: Path, log_dir: Path) -> None:
        self.graph = graph
        self.config = config
        self.log_dir = log_dir
        self.etcd_address = ""
        self.base_url = ""

    def start_etcd(self, host: Host, timeout_s: float = 30.0) -> None:
        log = self.log_dir / f"{host.name}-etcd.log"
        command = [sys.executable, "-m", "runtime.etcd_server", "--host", host.address]
        process = host.start([*command, "--port", str(ETCD_PORT)], log)
        deadline = time.monotonic() + timeout_s
        while "etcd listening on" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not start on {host}:\n{log.read_text()}")
            time.sleep(0.1)
        self.etcd_address = f"{host.address}:{ETCD_PORT}"

    def start_worker(self, host: Host, component: str, *overrides: str) -> None:
        """`component` on `host`, found through the etcd; a Frontend also sets `base_url`."""
        if component == "Frontend":
            overrides = (f"--Frontend.port={HTTP_PORT}", *overrides)
            self.base_url = f"http://{host.address}:{HTTP_PORT}"
        command = [sys.executable, "-m", "runtime.worker", self.graph, component]
        command += ["--etcd", self.etcd_address, "-f", str(self.config), *overrides]
        host.start(command, self.log_dir / f"{host.name}-{component}.log")

    def instances(self, component: str) -> list[dict]:
        """The component's live instances as the frontend lists them (id, address, pid)."""
        health = httpx.get(f"{self.base_url}/health", timeout=5)
        return health.json()["instances"][component]

    def wait_until(self, what: str, check: Callable[[], bool], timeout_s: float) -> None:
        """Polls `check()` until it holds; on timeout, fails with every process's log."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"not {what} after {timeout_s:.0f} s\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
            for log in sorted(self.log_dir.glob("*.log"))
        )
