"""Ports to listen on, picked before the listener exists.

A port that is free when picked can be taken before the process that will
listen on it binds: by any socket the kernel gives an ephemeral port, such as
every outgoing connection. So picked ports come from below the kernel's
ephemeral range, where only explicit binds land, chosen at random so that two
pickers rarely meet, and checked free by binding them all at once.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10_000


def _ceiling() -> int:
    """The first ephemeral port (Linux's default when the kernel does not say)."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports that nothing listens on now, outside the ephemeral range."""
    ceiling = _ceiling()
    if ceiling - LOWEST < 1_000:  # a kernel handing out nearly every port: take its pick
        return _kernel_ports(count, host)
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < count:
            sock = socket.socket()
            try:
                sock.bind((host, random.randrange(LOWEST, ceiling)))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _kernel_ports(count: int, host: str) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One port from `free_ports`."""
    return free_ports(1, host)[0]
