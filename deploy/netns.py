"""Several "hosts" on one machine: Linux network namespaces on a virtual switch.

The cross-host test and `benchmarks.cross_host` spread a graph over machines
that are really network namespaces. Each host has loopback and one `eth0`
(a veth link to a bridge that lives in a namespace of its own), so a process
there reaches the others only through the addresses they advertise, as across
real machines: a worker that registered 127.0.0.1 would be unreachable. The
machine itself joins the switch too (`Network.gateway`), so the caller can
talk HTTP to a frontend on a host.

A namespace isolates only the network: files, /dev/shm and processes stay
shared. `Host.env` therefore limits UCX to TCP on `eth0`; otherwise NIXL would
notice one kernel and move bytes through shared memory, which real hosts lack.

Needs root (CAP_NET_ADMIN) and iproute2; `unavailable()` says why they are
missing. Everything is removed on `close()`: processes first, then the
namespaces, whose deletion takes every veth with it. Namespaces are named after
the process that made them, so a later `Network` removes those of a caller
that was killed before it could clean up.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from runtime.processes import dies_with_parent, stop_process

DEVICE = "eth0"  # the host's one link, named as on a machine or a pod
_NETNS = re.compile(r"^vidgraph-(\d+)-\w+-\w+", flags=re.M)
_SUBNETS = [ipaddress.ip_network(f"10.213.{n}.0/24") for n in range(256)]


def ip(*args: str) -> str:
    """Runs `ip ARGS...`; raises `OSError` with ip's own message when it fails."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def unavailable() -> str | None:
    """Why namespaces with veth links cannot be made here, or None if they can."""
    if shutil.which("ip") is None:
        return "`ip` (Debian's iproute2) is not installed"
    try:
        with Network() as network:
            network.add_host("probe")
    except OSError as error:
        return f"this kernel or sandbox refuses network namespaces: {error}"
    return None


class Host:
    """One simulated machine: a network namespace with an address on the switch."""

    def __init__(self, name: str, netns: str, address: str) -> None:
        self.name = name
        self.netns = netns
        self.address = address
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def env(self) -> dict[str, str]:
        """What a vidgraph process needs to live on this host (see the module docstring)."""
        return {
            "VIDGRAPH_HOST": self.address,
            "UCX_TLS": "tcp",
            "UCX_NET_DEVICES": DEVICE,
        }

    def start(
        self, command: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Starts `command` on this host, output to `log`; it dies with the caller."""
        with log.open("ab") as out:
            process = subprocess.Popen(
                dies_with_parent(self._inside(command)),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env(env),
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def run(
        self, command: Sequence[str], timeout_s: float, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Runs `command` on this host to its end; its output comes back as text."""
        return subprocess.run(
            self._inside(command),
            capture_output=True,
            text=True,
            env=self._env(env),
            timeout=timeout_s,
        )

    def _inside(self, command: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *command]

    def _env(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        return {**os.environ, **self.env, **(extra or {})}

    def link_bytes(self) -> tuple[int, int]:
        """(received, sent) bytes on `eth0` so far: what crossed the network, per the kernel."""
        (link,) = json.loads(ip("-n", self.netns, "-j", "-s", "link", "show", "dev", DEVICE))
        return link["stats64"]["rx"]["bytes"], link["stats64"]["tx"]["bytes"]

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM every process started here (they drain), SIGKILL what outlives `grace_s`."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            stop_process(process, grace_s)
        self.processes.clear()

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.address})"


class Network:
    """A switch, the machine's own link to it, and the hosts added with `add_host`."""

    gateway: str  # this machine's address on the switch, set by `start()`
    _subnet: ipaddress.IPv4Network
    _addresses: Iterator[ipaddress.IPv4Address]

    def __init__(self) -> None:
        self._token = uuid.uuid4().hex[:6]
        self._hosts: list[Host] = []
        self._namespaces: list[str] = []

    def start(self) -> None:
        """Creates the switch and joins this machine to it as `gateway`."""
        _remove_orphans()
        self._subnet = _free_subnet()
        self._addresses = self._subnet.hosts()
        switch = self._netns("switch")
        ip("-n", switch, "link", "add", "br0", "type", "bridge")
        ip("-n", switch, "link", "set", "br0", "up")
        self.gateway = str(next(self._addresses))
        outside = f"vg{self._token}"
        self._link(outside, switch)
        ip("addr", "add", f"{self.gateway}/{self._subnet.prefixlen}", "dev", outside)
        ip("link", "set", outside, "up")

    def add_host(self, name: str) -> Host:
        """A new namespace with `eth0` on the switch and the next free address."""
        netns = self._netns(name)
        address = str(next(self._addresses))
        inside = f"vg{self._token}h{len(self._hosts)}"
        self._link(inside, self._namespaces[0])
        ip("link", "set", inside, "netns", netns)
        ip("-n", netns, "link", "set", inside, "name", DEVICE)
        ip("-n", netns, "addr", "add", f"{address}/{self._subnet.prefixlen}", "dev", DEVICE)
        ip("-n", netns, "link", "set", DEVICE, "up")
        ip("-n", netns, "link", "set", "lo", "up")
        host = Host(name, netns, address)
        self._hosts.append(host)
        return host

    def close(self) -> None:
        """Stops every process on every host, then deletes the namespaces; safe to repeat."""
        for host in self._hosts:
            host.stop()
        for netns in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        self._hosts.clear()
        self._namespaces.clear()

    def _netns(self, name: str) -> str:
        netns = f"vidgraph-{os.getpid()}-{self._token}-{name}"
        ip("netns", "add", netns)
        self._namespaces.append(netns)
        return netns

    def _link(self, name: str, switch: str) -> None:
        """A veth pair: `name` stays here for the caller to place, its peer joins the bridge."""
        peer = f"{name}s"
        ip("link", "add", name, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", switch)
        ip("-n", switch, "link", "set", peer, "master", "br0")
        ip("-n", switch, "link", "set", peer, "up")

    def __enter__(self) -> Network:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 under 10.213/16 that no address of this machine falls in (other runs included)."""
    used = [
        ipaddress.ip_interface(line.split()[3]).network
        for line in ip("-o", "-4", "addr").splitlines()
    ]
    for subnet in _SUBNETS:
        if not any(subnet.overlaps(other) for other in used):
            return subnet
    raise OSError("every /24 of 10.213.0.0/16 is in use on this machine; remove stale vg* links")


def _remove_orphans() -> None:
    """Deletes the namespaces of callers that died without `close()` (their processes died too)."""
    for found in _NETNS.finditer(ip("netns", "list")):
        if not Path(f"/proc/{found.group(1)}").exists():
            subprocess.run(["ip", "netns", "del", found.group(0)], capture_output=True)
